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

/* MI: replies are not built here; rsec only calls these from MI commands,
 * which the dlopen test does not run. They exist so RTLD_NOW resolves. */
void *init_mi_result_object(void **o) { static int x; *o = &x; return &x; }
void *init_mi_result_string(const char *v, int l) { (void)v; (void)l; static int x; return &x; }
void *init_mi_error_extra(int c, const char *m, int ml, const char *d, int dl)
{ (void)c; (void)m; (void)ml; (void)d; (void)dl; static int x; return &x; }
void *add_mi_array(void *t, char *n, int nl) { (void)n; (void)nl; return t; }
void *add_mi_object(void *t, char *n, int nl) { (void)n; (void)nl; return t; }
int add_mi_string(void *t, char *n, int nl, const char *v, int vl) { (void)t; (void)n; (void)nl; (void)v; (void)vl; return 0; }
int add_mi_number(void *t, char *n, int nl, double v) { (void)t; (void)n; (void)nl; (void)v; return 0; }
int add_mi_bool(void *t, char *n, int nl, int b) { (void)t; (void)n; (void)nl; (void)b; return 0; }
int try_get_mi_string_param(const void *p, char *n, char **v, int *l) { (void)p; (void)n; (void)v; (void)l; return -1; }

/* Events: published ids are counted so the test can see mod_init did it. */
int fake_events_published = 0;
int fake_events_raised = 0;
typedef struct { char *s; int len; } fake_str;
int evi_publish_event(fake_str name) { (void)name; return ++fake_events_published; }
int evi_get_id(fake_str *name) { (void)name; return -1; /* not known yet */ }
int evi_probe_event(int id) { (void)id; return 1; }
static int fake_params;
void *evi_get_params(void) { return &fake_params; }
int evi_param_add(void *l, const fake_str *n, const void *v, int f) { (void)l; (void)n; (void)v; (void)f; return 0; }
int evi_raise_event(int id, void *l) { (void)id; (void)l; fake_events_raised++; return 0; }
void evi_free_params(void *l) { (void)l; }

/* Statistics registered at run time (the per-tenant ones): counted only. */
int fake_stats_registered = 0;
int register_stat2(const char *module, char *name, void **pvar,
		unsigned short flags, void *ctx, int unsafe_)
{
	(void)module; (void)name; (void)pvar; (void)flags; (void)ctx; (void)unsafe_;
	fake_stats_registered++;
	return 0;
}

/* Message parsing: the dlopen test passes no real message, so there is
 * nothing to parse; success with no header found. */
int parse_headers_aux(void *msg, unsigned long long flags, int next, int well_known)
{ (void)msg; (void)flags; (void)next; (void)well_known; return 0; }
/* What 3.4 exports instead (3.6 made it a macro over parse_headers_aux). */
int parse_headers(void *msg, unsigned long long flags, int next)
{ (void)msg; (void)flags; (void)next; return 0; }
