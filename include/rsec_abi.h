/* Headers whose layouts rsec mirrors in src/ffi/sys.rs. Used only by
 * build.rs (bindgen) when OPENSIPS_SRC points at an OpenSIPS source tree, to
 * check the hand-written declarations against the real ones. */
#include "sr_module.h"
#include "parser/msg_parser.h"
#include "ip_addr.h"
#include "statistics.h"
#include "timer.h"
#include "cmds.h"
#include "mi/mi.h"
#include "evi/evi_modules.h"
#include "evi/evi_params.h"
