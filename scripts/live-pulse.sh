#!/usr/bin/env bash
# Real-time check of `wavemamba live` on PulseAudio null sinks (no sound hardware needed):
# starts a private PulseAudio with tests/fixtures/pulse-ci.pa, plays IN.wav into the fake
# microphone while `wavemamba live` runs for SECONDS, and prints live's once-a-second lines and
# summary (added latency, worker real-time factor, under/overruns).
#   scripts/live-pulse.sh IN.wav SECONDS [live flags…]
#   e.g. scripts/live-pulse.sh speech48.wav 20 --mode continue --low-latency --realtime-priority
# ECHO_DB=-10 simulates speakers: the microphone also hears what is played, at that gain, ~40 ms
# later (a PulseAudio loopback from the speaker's monitor into the microphone feed).
# Needs: apt-get install pulseaudio pulseaudio-utils. Writes into a temp dir; stops its server.
set -euo pipefail
cd "$(dirname "$0")/.."
in=$(realpath "$1"); secs=$2; shift 2
bin=${BIN:-target/release/wavemamba}
work=$(mktemp -d)
unset PULSE_RUNTIME_PATH PULSE_SERVER
export XDG_RUNTIME_DIR=$work/run
mkdir -m 700 "$XDG_RUNTIME_DIR"
pulseaudio -n -F tests/fixtures/pulse-ci.pa --daemonize=yes --exit-idle-time=-1 \
  --high-priority=yes --log-target=file:"$work/pa.log"
trap 'pulseaudio --kill 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 1
if [ -n "${ECHO_DB:-}" ]; then
  pactl load-module module-loopback source=speaker.monitor sink=micfeed latency_msec=40 >/dev/null
  loop=$(pactl list short sink-inputs | awk 'END {print $1}')
  pactl -- set-sink-input-volume "$loop" "${ECHO_DB}dB"
fi
"$bin" live --host pulseaudio --input-device mic --output-device speaker --seconds "$secs" \
  --record "$work/out.wav" "$@" 2> >(grep -v -e '^ALSA lib' -e ack -e 'Cannot' >&2) &
app=$!
sleep 0.3
paplay --device=micfeed "$in" &
play=$!
wait $app
kill $play 2>/dev/null || true
