/* A stand-in for the few OpenSIPS core symbols rsec.so imports, so the
 * dlopen test can load the module with RTLD_NOW exactly as OpenSIPS does,
 * on machines without OpenSIPS. Written for rsec's tests; it mirrors only
 * the signatures rsec declares in src/ffi/sys.rs. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int level_storage = 4; /* L_DBG: print everything */
int *log_level = &level_storage;
int log_facility = 0;
char *log_prefix = "";

/* Last message, for the test to inspect. */
char fake_last_log[2048];
int fake_log_count = 0;
int fake_timer_count = 0;

int dp_my_pid(void) { return 4242; }

void dprint(int level, int facility, const char *module, const char *func,
            char *stderr_fmt, char *syslog_fmt, char *format, ...)
{
	va_list ap;
	(void)facility; (void)syslog_fmt; (void)format;
	va_start(ap, format);
	/* The stderr format consumes time, pid, prefix, function, then the
	 * message as "%.*s": exactly what rsec must pass. */
	vsnprintf(fake_last_log, sizeof(fake_last_log), stderr_fmt, ap);
	va_end(ap);
	fake_log_count++;
	fprintf(stderr, "[fake-core level %d %s:%s] %s", level, module, func, fake_last_log);
}

typedef void (timer_function)(unsigned int ticks, void *param);
timer_function *fake_timer_f;

int register_timer(char *label, timer_function f, void *param,
                   unsigned int interval, unsigned short flags)
{
	(void)label; (void)param; (void)interval; (void)flags;
	fake_timer_f = f;
	fake_timer_count++;
	return 0;
}
