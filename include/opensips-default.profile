# The OpenSIPS build rsec targets when no OpenSIPS is found at build time:
# a stock `make all` of the 3.6.3 release from git on x86_64 Linux.
# OpenSIPS refuses a module whose strings differ from its own, so a build
# against this profile loads only into an OpenSIPS built the same way; build
# on the target host (or set OPENSIPS_BIN) otherwise.
version=opensips 3.6.3 (x86_64/linux)
flags=STATS: On, DISABLE_NAGLE, USE_MCAST, SHM_MMAP, PKG_MALLOC, Q_MALLOC, F_MALLOC, HP_MALLOC, F_PARALLEL_MALLOC, DBG_MALLOC, FAST_LOCK-ADAPTIVE_WAIT
scm_type=git
scm_rev=d5222226ad
