/* ALSA's library diagnostics ("ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM default", ...)
 * go to stderr through a variadic handler, which stable Rust cannot define. wm_alsa_quiet installs
 * one that drops them: wavemamba reports device errors itself, in one line. Declared here rather
 * than through <alsa/asoundlib.h> so that only the link needs libasound. */

typedef void (*wm_snd_lib_error_handler_t)(const char *file, int line, const char *function,
                                           int err, const char *fmt, ...);
int snd_lib_error_set_handler(wm_snd_lib_error_handler_t handler);

static void wm_alsa_drop(const char *file, int line, const char *function, int err,
                         const char *fmt, ...) {
  (void)file;
  (void)line;
  (void)function;
  (void)err;
  (void)fmt;
}

/* Returns ALSA's status (0 on success). */
int wm_alsa_quiet(void) { return snd_lib_error_set_handler(wm_alsa_drop); }
