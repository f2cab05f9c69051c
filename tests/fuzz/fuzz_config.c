/* fuzz_config.c: libFuzzer harness of the configuration parser (src/config.c).
 * The input is an INI file. It is read over the defaults as dtrain reads a config file; when
 * it loads, the cross-key validation runs too, and the printout of the effective configuration
 * (dt_config_write, what a run saves as config.ini) must load again into the very same struct:
 * parse -> print -> parse is the identity. A difference aborts with the key that differs. */
#define _GNU_SOURCE
#include "config.h"
#include "fuzz_util.h"

/* Compare one key of two configurations; abort naming it when they differ. */
static void fuzz_differs(const char *section, const char *key, const char *what) {
  fprintf(stderr, "fuzz_config: [%s] %s differs after print -> parse (%s)\n", section, key, what);
  abort();
}

#define CMP_INT(s, k, a, b) \
  if ((a) != (b)) fuzz_differs(#s, #k, "integer")
#define CMP_FLOAT(s, k, a, b) \
  if (memcmp(&(a), &(b), sizeof(double)) != 0) fuzz_differs(#s, #k, "float bits")
#define CMP_BOOL(s, k, a, b) \
  if ((a) != (b)) fuzz_differs(#s, #k, "bool")
#define CMP_STR(s, k, a, b) \
  if (strcmp((a) ? (a) : "", (b) ? (b) : "") != 0) fuzz_differs(#s, #k, "string")
#define CMP_CHOICE(s, k, a, b) \
  if ((a) != (b)) fuzz_differs(#s, #k, "choice")
#define CMP_INTLIST(s, k, a, b)                                       \
  if ((a).n != (b).n || memcmp((a).v, (b).v, sizeof(long) * (size_t)(a).n) != 0) \
    fuzz_differs(#s, #k, "integer list")
#define CMP_BOOLLIST(s, k, a, b)                                      \
  if ((a).n != (b).n || memcmp((a).v, (b).v, sizeof(bool) * (size_t)(a).n) != 0) \
    fuzz_differs(#s, #k, "bool list")
#define CMP_FIELD(sec, key, type, def, lo, hi, choices, help) \
  CMP_##type(sec, key, a->sec##_##key, b->sec##_##key);

static void fuzz_config_compare(const dt_config *a, const dt_config *b) {
  DT_CONFIG_KEYS(CMP_FIELD, DT_CFG_NO_CHOICE)
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char in_path[256], out_path[256];
  fuzz_write("in.ini", data, size);
  fuzz_path(in_path, sizeof in_path, "in.ini");
  fuzz_path(out_path, sizeof out_path, "printed.ini");

  dt_config first;
  dt_config_defaults(&first);
  dt_error_clear();
  if (dt_config_load(&first, in_path) == DT_OK) {
    dt_error_clear();
    (void)dt_config_validate(&first);
    FILE *f = fopen(out_path, "w");
    if (!f) abort();
    dt_config_write(&first, f);
    if (fclose(f) != 0) abort();
    dt_config second;
    dt_config_defaults(&second);
    dt_error_clear();
    if (dt_config_load(&second, out_path) != DT_OK) {
      fprintf(stderr, "fuzz_config: the printed configuration does not load: %s\n",
              dt_error_message());
      abort();
    }
    fuzz_config_compare(&first, &second);
    dt_config_free(&second);
  } else if (strcmp(dt_error_message(), "unknown error") == 0) {
    fprintf(stderr, "fuzz_config: a refused config left no error message\n");
    abort();
  }
  dt_config_free(&first);
  dt_error_clear();
  return 0;
}
