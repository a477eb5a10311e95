#!/usr/bin/env python3
"""Build wavemamba's training corpus: real recorded speech and real ambient noise from Debian
packages (game and telephony assets), as 16 kHz mono 16-bit WAV files plus a manifest.

The project's own copy of the recipe in ../shared/tools/speech-corpus (README "Data" says how to
use it). Packages are fetched with `apt-get download` (never installed) and unpacked with dpkg;
only the audio is kept, converted with ffmpeg, clips under --min-dur seconds and byte-identical
duplicates dropped.

usage: scripts/build-corpus.py OUTDIR [--sources a,b,c] [--cache DIR] [--jobs N] [--list]

Needs: package lists (`apt-get update`, as root, once), ffmpeg and unzip (`apt-get install -y
ffmpeg unzip`); `apt-get download` itself runs as any user. No Python packages.
Writes OUTDIR/<kind>/<source>/<...>.wav and OUTDIR/manifest.tsv with the columns
path, kind, source, debian_package, lang, speaker, duration_s, licence, original_path
(paths relative to OUTDIR; rows of sources not rebuilt in this run are kept).
The corpus is share-alike licensed (see --list): keep attribution in any model card trained on it,
and never commit it to the repository.
"""
import argparse
import concurrent.futures as cf
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import wave

# name: (kind, debian package, glob under the unpacked root, licence, (lang, speaker) of a path,
#        ffmpeg input format or None, approximate minutes)
SOURCES = {
    # ---- real speech ----
    'asterisk-en': ('speech', 'asterisk-core-sounds-en-g722', '**/*.g722', 'CC-BY-SA-3.0',
                    lambda p: ('en', 'allison'), 'g722', 25),
    'asterisk-es': ('speech', 'asterisk-core-sounds-es-g722', '**/*.g722', 'CC-BY-SA-3.0',
                    lambda p: ('es', 'allison'), 'g722', 31),
    'asterisk-fr': ('speech', 'asterisk-core-sounds-fr-g722', '**/*.g722', 'CC-BY-SA-3.0',
                    lambda p: ('fr', 'june'), 'g722', 26),
    'asterisk-it': ('speech', 'asterisk-core-sounds-it-g722', '**/*.g722', 'CC-BY-SA-3.0',
                    lambda p: ('it', 'carlo'), 'g722', 24),
    'asterisk-ru': ('speech', 'asterisk-core-sounds-ru-g722', '**/*.g722', 'CC-BY-3.0',
                    lambda p: ('ru', 'ivrvoice-ru'), 'g722', 25),
    'klettres': ('speech', 'klettres-data', 'usr/share/klettres/*/*/*.ogg', 'GPL-2+',
                 lambda p: (p.split('/')[-3], p.split('/')[-3]), None, 52),
    'ktuberling': ('speech', 'ktuberling-data', 'usr/share/ktuberling/sounds/*/*.*', 'GPL-2+',
                   lambda p: (p.split('/')[-2], p.split('/')[-2]), None, 32),
    'gcin': ('speech', 'gcin-voice', '**/*.ogg', 'CC-BY-3.0', lambda p: ('zh', 'gcin'), None, 14),
    # ---- real noise / non-speech ----
    '0ad-ambient': ('noise', '0ad-data', 'audio/ambient/**/*.ogg', 'CC-BY-SA-3.0',
                    lambda p: ('-', p.split('/')[-2]), None, 29),
    'megaglest-ambient': ('noise', 'megaglest-data',
                          'usr/share/games/megaglest/tilesets/*/sounds/*.*', 'CC-BY-SA-3.0',
                          lambda p: ('-', p.split('/')[-3]), None, 13),
}
# 0ad ships its data inside a zip: unpack only audio/ambient.
ZIPPED = {'0ad-data': ('usr/share/games/0ad/mods/public/public.zip', 'audio/ambient/*')}
HEADER = ('path', 'kind', 'source', 'debian_package', 'lang', 'speaker', 'duration_s', 'licence',
          'original_path')


def die(msg):
    sys.exit(f'build-corpus: {msg}')


def check_tools():
    missing = [t for t in ('apt-get', 'dpkg', 'tar', 'ffmpeg', 'unzip') if not shutil.which(t)]
    if missing:
        die(f'missing tools: {" ".join(missing)}; install with: apt-get install -y ffmpeg unzip')


def fetch(pkg, cache):
    """The unpacked audio of a package (downloaded and unpacked once into `cache`)."""
    root = os.path.join(cache, pkg)
    if os.path.isdir(root) and os.listdir(root):
        return root
    os.makedirs(root, exist_ok=True)
    dl = os.path.join(cache, '_debs')
    os.makedirs(dl, exist_ok=True)
    if not glob.glob(os.path.join(dl, pkg + '_*.deb')):
        r = subprocess.run(['apt-get', 'download', '-q', pkg], cwd=dl, capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            die(f'apt-get download {pkg} failed (run `apt-get update` first?):\n{r.stderr.strip()}')
    deb = sorted(glob.glob(os.path.join(dl, pkg + '_*.deb')))[-1]
    # tar exits 2 when a pattern matches nothing: fine as long as something was extracted.
    subprocess.run(f"dpkg --fsys-tarfile '{deb}' | tar -x -C '{root}' --wildcards '*.ogg' '*.wav' "
                   f"'*.flac' '*.g722' '*.opus' '*.zip' '*copyright' 2>/dev/null", shell=True)
    if not any(files for _, _, files in os.walk(root)):
        shutil.rmtree(root, ignore_errors=True)
        die(f'nothing extracted from {deb}')
    if pkg in ZIPPED:
        z, member = ZIPPED[pkg]
        subprocess.run(['unzip', '-q', '-o', os.path.join(root, z), member, '-d', root], check=True)
        os.remove(os.path.join(root, z))
    return root


def convert(src, dst, fmt):
    """src → 16 kHz mono 16-bit WAV at dst (written under a temporary name, then renamed);
    returns the duration in seconds, or None when ffmpeg cannot read it."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + '.part.wav'
    cmd = ['ffmpeg', '-nostdin', '-v', 'error', '-y']
    if fmt:
        cmd += ['-f', fmt]
    cmd += ['-i', src, '-ac', '1', '-ar', '16000', '-sample_fmt', 's16', tmp]
    r = subprocess.run(cmd, capture_output=True)
    if r.returncode != 0 or not os.path.exists(tmp):
        if os.path.exists(tmp):
            os.remove(tmp)
        return None
    os.replace(tmp, dst)
    with wave.open(dst) as w:
        return w.getnframes() / w.getframerate()


def build_source(name, out, cache, jobs, min_dur):
    kind, pkg, pattern, lic, meta, fmt, _ = SOURCES[name]
    root = fetch(pkg, cache)
    files = sorted(p for p in glob.glob(os.path.join(root, pattern), recursive=True)
                   if os.path.isfile(p) and not p.endswith('copyright'))
    # Drop byte-identical duplicates (e.g. megaglest tilesets share ambience files).
    seen, uniq = set(), []
    for p in files:
        with open(p, 'rb') as f:
            h = hashlib.md5(f.read()).hexdigest()
        if h not in seen:
            seen.add(h)
            uniq.append(p)
    shutil.rmtree(os.path.join(out, kind, name), ignore_errors=True)
    rows, n, total, dropped = [], 0, 0.0, 0
    with cf.ThreadPoolExecutor(jobs) as pool:
        jobs_ = []
        for p in uniq:
            rel = os.path.relpath(p, root)
            safe = re.sub(r'[^A-Za-z0-9._/-]', '_', rel).rsplit('.', 1)[0]
            if safe != rel.rsplit('.', 1)[0]:  # non-ASCII names (gcin bopomofo): keep them unique
                safe += '_' + hashlib.md5(rel.encode()).hexdigest()[:8]
            dst = os.path.join(out, kind, name, safe + '.wav')
            jobs_.append((p, rel, dst, pool.submit(convert, p, dst, fmt)))
        for p, rel, dst, fut in jobs_:
            d = fut.result()
            if d is None or d < min_dur:
                dropped += 1
                if os.path.exists(dst):
                    os.remove(dst)
                continue
            lang, spk = meta(p)
            rows.append((os.path.relpath(dst, out), kind, name, pkg, lang, spk, f'{d:.3f}', lic, rel))
            n += 1
            total += d
    print(f'{name:18s} {kind:6s} files={n:5d} minutes={total / 60:7.1f} dropped={dropped}', flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('out', nargs='?', help='output directory (outside the repository)')
    ap.add_argument('--sources', default=','.join(SOURCES), help='comma-separated, see --list')
    ap.add_argument('--cache', default=os.path.expanduser('~/.cache/speech-corpus'),
                    help='where downloaded packages are kept')
    ap.add_argument('--jobs', type=int, default=os.cpu_count() or 1)
    ap.add_argument('--min-dur', type=float, default=0.25, help='drop clips shorter than this (s)')
    ap.add_argument('--list', action='store_true', help='list the sources and exit')
    a = ap.parse_args()
    if a.list:
        for k, v in SOURCES.items():
            print(f'{k:18s} {v[0]:6s} ~{v[6]:3d} min  {v[1]:32s} {v[3]}')
        return
    if not a.out:
        ap.error('OUTDIR is required')
    names = [s.strip() for s in a.sources.split(',') if s.strip()]
    unknown = [s for s in names if s not in SOURCES]
    if unknown:
        die(f'unknown sources {unknown}; see --list')
    check_tools()
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for name in names:
        rows += build_source(name, a.out, a.cache, a.jobs, a.min_dur)
    # Merge with an existing manifest: keep rows of sources not rebuilt in this run.
    man = os.path.join(a.out, 'manifest.tsv')
    old = []
    if os.path.exists(man):
        with open(man) as f:
            next(f, None)
            old = [line for line in f if line.split('\t')[2] not in names]
    tmp = man + '.tmp'
    with open(tmp, 'w') as f:
        f.write('\t'.join(HEADER) + '\n')
        f.writelines(old)
        for r in rows:
            f.write('\t'.join(r) + '\n')
    os.replace(tmp, man)
    print(f'manifest: {man} ({len(old) + len(rows)} files)')


if __name__ == '__main__':
    main()
