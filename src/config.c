/* config.c: the configuration of dtrain, driven entirely by the X-macro table DT_CONFIG_KEYS
 * of config.h. The table becomes one descriptor array (g_keys) from which the defaults, the
 * inih handler, per-type parsing and range checks, --set overrides, the INI printout and
 * --help-config are all generated, and the texts of the choice enums; only
 * dt_config_validate names keys one by one, because its checks relate several keys (each
 * network family's own checks are with the family, src/models/, reached through
 * dt_model_validate). */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "data/dataset.h"
#include "models/model.h"

typedef enum { CFG_INT, CFG_FLOAT, CFG_BOOL, CFG_STR, CFG_CHOICE, CFG_INTLIST, CFG_BOOLLIST } cfg_type;

typedef struct {
  const char *section, *key, *def, *help;
  const char *const *choices; /* CHOICE: the text of each enum value, in enum order */
  int n_choices;
  cfg_type type;
  long ilo, ihi;   /* INT and the items of INTLIST */
  double flo, fhi; /* FLOAT */
  size_t offset;   /* of the field in dt_config */
} cfg_key;

/* Only the range of the matching kind is taken from the table, so that a large FLOAT bound is
 * never converted to long (and the reverse). */
#define CFG_RANGE_INT(lo, hi) (long)(lo), (long)(hi), 0.0, 0.0
#define CFG_RANGE_INTLIST(lo, hi) (long)(lo), (long)(hi), 0.0, 0.0
#define CFG_RANGE_FLOAT(lo, hi) 0L, 0L, (double)(lo), (double)(hi)
#define CFG_RANGE_BOOL(lo, hi) 0L, 0L, 0.0, 0.0
#define CFG_RANGE_STR(lo, hi) 0L, 0L, 0.0, 0.0
#define CFG_RANGE_CHOICE(lo, hi) 0L, 0L, 0.0, 0.0
#define CFG_RANGE_BOOLLIST(lo, hi) 0L, 0L, 0.0, 0.0

/* The texts of each CHOICE key's values, in enum order (cfg_texts_<section>_<key>), and the
 * typed dt_<section>_<key>_str of config.h. The parser stores a value's index in the texts as
 * the enum, so each enum field must be stored like an int. */
#define CFG_TEXT(id, text) text,
#define CFG_TEXTS_INT(...)
#define CFG_TEXTS_FLOAT(...)
#define CFG_TEXTS_BOOL(...)
#define CFG_TEXTS_STR(...)
#define CFG_TEXTS_INTLIST(...)
#define CFG_TEXTS_BOOLLIST(...)
#define CFG_TEXTS_CHOICE(sec, key, ...)                                                         \
  static const char *const cfg_texts_##sec##_##key[] = {__VA_ARGS__};                          \
  _Static_assert(sizeof(dt_##sec##_##key) == sizeof(int), "enum stored as int");              \
  const char *dt_##sec##_##key##_str(dt_##sec##_##key value) {                                 \
    DT_CHECK((size_t)value < DT_ARRAY_LEN(cfg_texts_##sec##_##key));                           \
    return cfg_texts_##sec##_##key[value];                                                     \
  }
#define CFG_TEXTS(sec, key, type, def, lo, hi, choices, help) CFG_TEXTS_##type(sec, key, choices)
DT_CONFIG_KEYS(CFG_TEXTS, CFG_TEXT)
#undef CFG_TEXTS

/* The choices column of the descriptor: the texts and their number, or none. */
#define CFG_CHOICES_INT(sec, key) NULL, 0
#define CFG_CHOICES_FLOAT(sec, key) NULL, 0
#define CFG_CHOICES_BOOL(sec, key) NULL, 0
#define CFG_CHOICES_STR(sec, key) NULL, 0
#define CFG_CHOICES_INTLIST(sec, key) NULL, 0
#define CFG_CHOICES_BOOLLIST(sec, key) NULL, 0
#define CFG_CHOICES_CHOICE(sec, key) \
  cfg_texts_##sec##_##key, (int)DT_ARRAY_LEN(cfg_texts_##sec##_##key)

#define CFG_ENTRY(sec, name, type, def, lo, hi, choices, help)                               \
  {#sec, #name, def, help, CFG_CHOICES_##type(sec, name), CFG_##type, CFG_RANGE_##type(lo, hi), \
   offsetof(dt_config, sec##_##name)},
static const cfg_key g_keys[] = {DT_CONFIG_KEYS(CFG_ENTRY, DT_CFG_NO_CHOICE)};
#undef CFG_ENTRY
#define CFG_NKEYS DT_ARRAY_LEN(g_keys)

/* One parsed value before it is stored; `s` borrows the text it was parsed from. */
typedef union {
  long i;
  int choice; /* CHOICE: the index of the value in k->choices, which is its enum value */
  double f;
  bool b;
  const char *s;
  dt_intlist il;
  dt_boollist bl;
} cfg_value;

/* Longest content of one line that inih takes whole: its buffer holds INI_MAX_LINE bytes
 * including "\r\n" and the terminating NUL (ini.h). Debian builds it with 200. */
#define CFG_LINE_MAX (INI_MAX_LINE - 3)

/* ---- small string helpers ---- */

/* Append printf output to the NUL-terminated `buf` of `cap` bytes, truncating silently. */
__attribute__((format(printf, 3, 4))) static void cfg_append(char *buf, size_t cap, const char *fmt,
                                                             ...) {
  size_t len = strlen(buf);
  if (len + 1 >= cap) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + len, cap - len, fmt, ap);
  va_end(ap);
}

static bool cfg_is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Copy [begin, end) without leading and trailing whitespace into a new string. */
static char *cfg_strip_dup(const char *begin, const char *end) {
  while (begin < end && cfg_is_space(*begin)) begin++;
  while (end > begin && cfg_is_space(end[-1])) end--;
  size_t n = (size_t)(end - begin);
  char *s = dt_xmalloc(n + 1);
  memcpy(s, begin, n);
  s[n] = 0;
  return s;
}

/* The first character of `chars` in `s`, or the start of an inline comment (';' after
 * whitespace), or the end of `s`: inih's rule for where a name or section name ends. */
static const char *cfg_find_chars(const char *s, const char *chars) {
  bool was_space = false;
  while (*s && !strchr(chars, *s) && !(was_space && *s == ';')) {
    was_space = cfg_is_space(*s);
    s++;
  }
  return s;
}

/* Optimal-string-alignment distance (a swap of two neighbours counts 1), for "did you mean".
 * Long strings get a large distance: no suggestion. */
static int cfg_distance(const char *a, const char *b) {
  enum { N = 48 };
  size_t la = strlen(a), lb = strlen(b);
  if (la >= N || lb >= N) return N;
  int d[N + 1][N + 1];
  for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    for (size_t j = 1; j <= lb; j++) {
      int cost = a[i - 1] != b[j - 1];
      int best = DT_MIN(d[i - 1][j] + 1, d[i][j - 1] + 1);
      best = DT_MIN(best, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        best = DT_MIN(best, d[i - 2][j - 2] + 1);
      d[i][j] = best;
    }
  }
  return d[la][lb];
}

/* A name close enough to `typed` to be a typo of it. */
static bool cfg_is_typo(const char *typed, const char *name) {
  int limit = strlen(typed) >= 6 ? 2 : 1;
  return cfg_distance(typed, name) <= limit;
}

/* ---- the table ---- */

static const cfg_key *cfg_find(const char *section, const char *key) {
  for (size_t i = 0; i < CFG_NKEYS; i++)
    if (strcmp(g_keys[i].section, section) == 0 && strcmp(g_keys[i].key, key) == 0) return &g_keys[i];
  return NULL;
}

static bool cfg_section_known(const char *section) {
  for (size_t i = 0; i < CFG_NKEYS; i++)
    if (strcmp(g_keys[i].section, section) == 0) return true;
  return false;
}

/* True for the first key of each section in table order. */
static bool cfg_first_of_section(size_t i) {
  for (size_t j = 0; j < i; j++)
    if (strcmp(g_keys[j].section, g_keys[i].section) == 0) return false;
  return true;
}

static void cfg_list_sections(char *buf, size_t cap) {
  buf[0] = 0;
  for (size_t i = 0; i < CFG_NKEYS; i++)
    if (cfg_first_of_section(i)) cfg_append(buf, cap, "%s%s", buf[0] ? ", " : "", g_keys[i].section);
}

static void cfg_list_keys(const char *section, char *buf, size_t cap) {
  buf[0] = 0;
  for (size_t i = 0; i < CFG_NKEYS; i++)
    if (strcmp(g_keys[i].section, section) == 0)
      cfg_append(buf, cap, "%s%s", buf[0] ? ", " : "", g_keys[i].key);
}

/* `where` is "file:line" or "--set assignment". */
static dt_status cfg_unknown_section(const char *where, const char *section) {
  char hint[128] = "", sections[512];
  for (size_t i = 0; i < CFG_NKEYS && !hint[0]; i++)
    if (cfg_first_of_section(i) && cfg_is_typo(section, g_keys[i].section))
      snprintf(hint, sizeof hint, ", did you mean [%s]?", g_keys[i].section);
  cfg_list_sections(sections, sizeof sections);
  return dt_error_set(DT_ERR_CONFIG, "%s: unknown section [%s]%s (sections: %s)", where, section, hint,
                      sections);
}

static dt_status cfg_unknown_key(const char *where, const char *section, const char *key) {
  char hint[160] = "", keys[1024];
  /* The same name in another section is the likeliest mistake; a typo in this section next. */
  for (size_t i = 0; i < CFG_NKEYS && !hint[0]; i++)
    if (strcmp(g_keys[i].key, key) == 0)
      snprintf(hint, sizeof hint, ", did you mean [%s] %s?", g_keys[i].section, g_keys[i].key);
  for (size_t i = 0; i < CFG_NKEYS && !hint[0]; i++)
    if (strcmp(g_keys[i].section, section) == 0 && cfg_is_typo(key, g_keys[i].key))
      snprintf(hint, sizeof hint, ", did you mean %s?", g_keys[i].key);
  cfg_list_keys(section, keys, sizeof keys);
  return dt_error_set(DT_ERR_CONFIG, "%s: [%s] %s: unknown key%s (keys of [%s]: %s)", where, section,
                      key, hint, section, keys);
}

/* ---- parsing one value ---- */

/* Longest STR value: DT_STR_MAX with its NUL, and short enough that "key = value" still fits
 * one line of the INI parser, so that dt_config_write always produces a loadable file. */
static size_t cfg_str_max(const cfg_key *k) {
  size_t line_room = CFG_LINE_MAX - strlen(k->key) - 3;
  return DT_MIN((size_t)DT_STR_MAX - 1, line_room);
}

static const char *const g_true_words[] = {"true", "yes", "on", "1"};
static const char *const g_false_words[] = {"false", "no", "off", "0"};

static bool cfg_parse_bool(const char *s, bool *out) {
  for (size_t i = 0; i < DT_ARRAY_LEN(g_true_words); i++) {
    if (strcasecmp(s, g_true_words[i]) == 0) return *out = true;
    if (strcasecmp(s, g_false_words[i]) == 0) return !(*out = false);
  }
  return false;
}

/* The whole of `s` is a decimal integer. *overflow: it is one, but does not fit a long. */
static bool cfg_parse_long(const char *s, long *out, bool *overflow) {
  *overflow = false;
  if (!*s || cfg_is_space(*s)) return false;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (end == s || *end) return false;
  *overflow = errno == ERANGE;
  *out = v;
  return true;
}

static bool cfg_check_long(const cfg_key *k, long v, bool overflow, char *why, size_t cap,
                           const char *what) {
  if (overflow) {
    snprintf(why, cap, "%s does not fit a 64-bit integer", what);
    return false;
  }
  if (v < k->ilo) {
    snprintf(why, cap, "%s is less than the minimum %ld", what, k->ilo);
    return false;
  }
  if (v > k->ihi) {
    snprintf(why, cap, "%s is greater than the maximum %ld", what, k->ihi);
    return false;
  }
  return true;
}

/* INTLIST and BOOLLIST: comma-separated items, whitespace around each item ignored. */
static bool cfg_parse_list(const cfg_key *k, const char *s, cfg_value *v, char *why, size_t cap) {
  int n = 0;
  long ivals[DT_LIST_MAX];
  bool bvals[DT_LIST_MAX];
  if (*s) {
    const char *p = s;
    for (int item = 1;; item++) {
      const char *comma = strchr(p, ',');
      const char *end = comma ? comma : p + strlen(p);
      char *text = cfg_strip_dup(p, end);
      bool ok = true;
      if (n == DT_LIST_MAX) {
        snprintf(why, cap, "more than %d items", DT_LIST_MAX);
        ok = false;
      } else if (!*text) {
        snprintf(why, cap, "item %d is empty", item);
        ok = false;
      } else if (k->type == CFG_INTLIST) {
        bool overflow;
        char what[96];
        snprintf(what, sizeof what, "item %d (%.40s)", item, text);
        if (!cfg_parse_long(text, &ivals[n], &overflow)) {
          snprintf(why, cap, "%s is not an integer", what);
          ok = false;
        } else {
          ok = cfg_check_long(k, ivals[n], overflow, why, cap, what);
        }
      } else if (!cfg_parse_bool(text, &bvals[n])) {
        snprintf(why, cap, "item %d (%.40s) is not a boolean", item, text);
        ok = false;
      }
      free(text);
      if (!ok) return false;
      n++;
      if (!comma) break;
      p = comma + 1;
    }
  }
  if (k->type == CFG_INTLIST) {
    v->il.n = n;
    memcpy(v->il.v, ivals, (size_t)n * sizeof ivals[0]);
  } else {
    v->bl.n = n;
    memcpy(v->bl.v, bvals, (size_t)n * sizeof bvals[0]);
  }
  return true;
}

static bool cfg_parse_str(const cfg_key *k, const char *s, char *why, size_t cap) {
  size_t len = strlen(s), max = cfg_str_max(k);
  if (len > max) {
    snprintf(why, cap, "text of %zu characters, longer than %zu", len, max);
    return false;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f) {
      snprintf(why, cap, "contains a control character");
      return false;
    }
    /* inih cuts a value at ';' after whitespace (an inline comment), and dt_config_write puts
     * a space before the value: such a value could not be read back from the file. */
    if (c == ';' && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) {
      snprintf(why, cap, "';' at the start or after a space, which an INI file reads as a comment");
      return false;
    }
  }
  return true;
}

/* The index of `s` among the choices of k (its enum value), -1 for none. */
static int cfg_parse_choice(const cfg_key *k, const char *s) {
  for (int i = 0; i < k->n_choices; i++)
    if (strcmp(k->choices[i], s) == 0) return i;
  return -1;
}

/* Parse and range-check `s` for key `k`; on failure write the reason to `why`. */
static bool cfg_parse_value(const cfg_key *k, const char *s, cfg_value *v, char *why, size_t cap) {
  switch (k->type) {
    case CFG_INT: {
      bool overflow;
      if (!cfg_parse_long(s, &v->i, &overflow)) {
        snprintf(why, cap, "not an integer");
        return false;
      }
      return cfg_check_long(k, v->i, overflow, why, cap, "the value");
    }
    case CFG_FLOAT: {
      char *end;
      if (!*s || cfg_is_space(*s)) {
        snprintf(why, cap, "not a number");
        return false;
      }
      v->f = strtod(s, &end);
      if (end == s || *end) {
        snprintf(why, cap, "not a number");
        return false;
      }
      if (!isfinite(v->f)) {
        snprintf(why, cap, "not a finite number");
        return false;
      }
      if (v->f < k->flo || v->f > k->fhi) {
        snprintf(why, cap, "the value is %s the %s %g", v->f < k->flo ? "less than" : "greater than",
                 v->f < k->flo ? "minimum" : "maximum", v->f < k->flo ? k->flo : k->fhi);
        return false;
      }
      return true;
    }
    case CFG_BOOL:
      if (!cfg_parse_bool(s, &v->b)) {
        snprintf(why, cap, "not a boolean");
        return false;
      }
      return true;
    case CFG_STR:
      v->s = s;
      return cfg_parse_str(k, s, why, cap);
    case CFG_CHOICE:
      v->choice = cfg_parse_choice(k, s);
      if (v->choice < 0) {
        snprintf(why, cap, "not one of the choices");
        return false;
      }
      return true;
    case CFG_INTLIST:
    case CFG_BOOLLIST:
      return cfg_parse_list(k, s, v, why, cap);
  }
  return false;
}

/* What a key accepts, for messages, the INI printout and --help-config. */
static void cfg_accepted(const cfg_key *k, char *buf, size_t cap) {
  buf[0] = 0;
  switch (k->type) {
    case CFG_INT:
      snprintf(buf, cap, "an integer in [%ld, %ld]", k->ilo, k->ihi);
      break;
    case CFG_FLOAT:
      snprintf(buf, cap, "a finite number in [%g, %g]", k->flo, k->fhi);
      break;
    case CFG_BOOL:
      snprintf(buf, cap, "true, false, yes, no, on, off, 1 or 0");
      break;
    case CFG_STR:
      snprintf(buf, cap, "text of at most %zu characters", cfg_str_max(k));
      break;
    case CFG_CHOICE:
      cfg_append(buf, cap, "one of ");
      for (int i = 0; i < k->n_choices; i++)
        cfg_append(buf, cap, "%s%s", i ? ", " : "", k->choices[i]);
      break;
    case CFG_INTLIST:
      snprintf(buf, cap, "up to %d comma-separated integers, each in [%ld, %ld]; empty for none",
               DT_LIST_MAX, k->ilo, k->ihi);
      break;
    case CFG_BOOLLIST:
      snprintf(buf, cap, "up to %d comma-separated booleans (true, false, ...); empty for none",
               DT_LIST_MAX);
      break;
  }
}

static const char *cfg_type_name(cfg_type t) {
  switch (t) {
    case CFG_INT: return "integer";
    case CFG_FLOAT: return "number";
    case CFG_BOOL: return "boolean";
    case CFG_STR: return "text";
    case CFG_CHOICE: return "choice";
    case CFG_INTLIST: return "integer list";
    case CFG_BOOLLIST: return "boolean list";
  }
  return "?";
}

static void *cfg_field(dt_config *cfg, const cfg_key *k) { return (char *)cfg + k->offset; }
static const void *cfg_cfield(const dt_config *cfg, const cfg_key *k) {
  return (const char *)cfg + k->offset;
}

static void cfg_store(dt_config *cfg, const cfg_key *k, const cfg_value *v) {
  void *field = cfg_field(cfg, k);
  switch (k->type) {
    case CFG_INT: *(long *)field = v->i; break;
    case CFG_FLOAT: *(double *)field = v->f; break;
    case CFG_BOOL: *(bool *)field = v->b; break;
    case CFG_CHOICE: *(int *)field = v->choice; break;
    case CFG_STR: {
      char *copy = dt_xstrdup(v->s);
      free(*(char **)field);
      *(char **)field = copy;
      break;
    }
    case CFG_INTLIST: *(dt_intlist *)field = v->il; break;
    case CFG_BOOLLIST: *(dt_boollist *)field = v->bl; break;
  }
}

/* Parse, check and store one value. `where` names its origin ("file:line" or "--set a.b=c");
 * messages from a file restate "[section] key = value", an override already shows it. */
static dt_status cfg_apply(dt_config *cfg, const cfg_key *k, const char *text, const char *where,
                           bool from_set) {
  cfg_value v;
  char why[256], accepted[512];
  if (!cfg_parse_value(k, text, &v, why, sizeof why)) {
    cfg_accepted(k, accepted, sizeof accepted);
    if (from_set)
      return dt_error_set(DT_ERR_CONFIG, "%s: %s (accepted: %s)", where, why, accepted);
    return dt_error_set(DT_ERR_CONFIG, "%s: [%s] %s = %s: %s (accepted: %s)", where, k->section,
                        k->key, text, why, accepted);
  }
  cfg_store(cfg, k, &v);
  return DT_OK;
}

/* ---- printing values ---- */

/* Shortest decimal text that reads back as exactly `v`, into buf (at least 40 bytes). */
static void cfg_format_double(char *buf, size_t cap, double v) {
  for (int digits = 1; digits <= 17; digits++) {
    snprintf(buf, cap, "%.*g", digits, v);
    if (strtod(buf, NULL) == v) break;
  }
}

/* The value of key k as an INI file holds it, into buf (truncated to cap; a value of the
 * table fits in DT_STR_MAX + 1 bytes). */
static void cfg_format_value(char *buf, size_t cap, const dt_config *cfg, const cfg_key *k) {
  const void *field = cfg_cfield(cfg, k);
  buf[0] = 0;
  switch (k->type) {
    case CFG_INT: snprintf(buf, cap, "%ld", *(const long *)field); break;
    case CFG_FLOAT: cfg_format_double(buf, cap, *(const double *)field); break;
    case CFG_BOOL: snprintf(buf, cap, "%s", *(const bool *)field ? "true" : "false"); break;
    case CFG_STR: {
      const char *s = *(char *const *)field;
      snprintf(buf, cap, "%s", s ? s : "");
      break;
    }
    case CFG_CHOICE: {
      const int i = *(const int *)field;
      DT_CHECK(i >= 0 && i < k->n_choices);
      snprintf(buf, cap, "%s", k->choices[i]);
      break;
    }
    case CFG_INTLIST: {
      const dt_intlist *l = field;
      for (int i = 0; i < l->n; i++) cfg_append(buf, cap, "%s%ld", i ? "," : "", l->v[i]);
      break;
    }
    case CFG_BOOLLIST: {
      const dt_boollist *l = field;
      for (int i = 0; i < l->n; i++)
        cfg_append(buf, cap, "%s%s", i ? "," : "", l->v[i] ? "true" : "false");
      break;
    }
  }
}

static void cfg_print_value(FILE *f, const dt_config *cfg, const cfg_key *k) {
  char buf[DT_STR_MAX + 64];
  cfg_format_value(buf, sizeof buf, cfg, k);
  fputs(buf, f);
}

/* An empty STR or list: written as "key =" without a trailing space. */
static bool cfg_is_empty(const dt_config *cfg, const cfg_key *k) {
  const void *field = cfg_cfield(cfg, k);
  switch (k->type) {
    case CFG_STR: return !*(char *const *)field || !**(char *const *)field;
    case CFG_INTLIST: return ((const dt_intlist *)field)->n == 0;
    case CFG_BOOLLIST: return ((const dt_boollist *)field)->n == 0;
    default: return false;
  }
}

/* Write `text` as lines of at most ~`width` characters, each starting with `prefix`. */
static void cfg_print_wrapped(FILE *f, const char *prefix, const char *text, size_t width) {
  const char *p = text;
  while (*p) {
    while (*p == ' ') p++;
    size_t len = strlen(p);
    size_t n = len;
    if (len > width) {
      n = width;
      while (n > 0 && p[n] != ' ') n--;
      if (n == 0) { /* one word longer than the width: break after it */
        n = width;
        while (p[n] && p[n] != ' ') n++;
      }
    }
    if (n == 0) break;
    fprintf(f, "%s%.*s\n", prefix, (int)n, p);
    p += n;
  }
}

/* ---- public interface ---- */

void dt_config_defaults(dt_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < CFG_NKEYS; i++) {
    const cfg_key *k = &g_keys[i];
    cfg_value v;
    char why[256];
    if (!cfg_parse_value(k, k->def, &v, why, sizeof why))
      DT_FATAL("config table: the default \"%s\" of [%s] %s is invalid: %s", k->def, k->section,
               k->key, why);
    cfg_store(cfg, k, &v);
  }
}

void dt_config_free(dt_config *cfg) {
  for (size_t i = 0; i < CFG_NKEYS; i++) {
    if (g_keys[i].type != CFG_STR) continue;
    char **s = cfg_field(cfg, &g_keys[i]);
    free(*s);
    *s = NULL;
  }
  free(cfg->source);
  cfg->source = NULL;
}

/* State of one dt_config_load. The reader hands inih one physical line per call, so that it
 * knows the line number of every handler call (Debian's inih passes the handler none). */
typedef struct {
  dt_config *cfg;
  const char *path;
  FILE *f;
  char line[INI_MAX_LINE + 1]; /* one physical line: content, "\r\n", NUL */
  int lineno;
  bool failed;              /* a message is set; stop */
  int set_on[CFG_NKEYS];    /* line where each key was given, 0 = not yet */
} cfg_parse;

/* Where in the file: "path:line". */
static void cfg_where(const cfg_parse *st, char *buf, size_t cap) {
  snprintf(buf, cap, "%s:%d", st->path, st->lineno);
}

/* Check one line (without BOM) before inih parses it; false with a message set on error.
 * Checking the shape here keeps the first error of the file the one reported: inih goes on
 * after a syntax error, and a handler error on a later line would otherwise win. Section
 * headers are checked here too, because a section with no keys never reaches the handler. */
static bool cfg_check_line(const char *p, const char *where) {
  const char *q = p;
  while (*q == ' ' || *q == '\t') q++;
  if (!*q || cfg_is_space(*q) || *q == ';' || *q == '#') return true; /* blank or comment */
  if (q != p) {
    /* inih continues the previous value with an indented line (multi-line values), so an
     * indented key or section would silently become part of a value. */
    dt_error_set(DT_ERR_CONFIG,
                 "%s: indented line (an INI parser reads it as the continuation of the previous "
                 "value): remove the leading whitespace",
                 where);
    return false;
  }
  if (*p == '[') {
    const char *close = cfg_find_chars(p + 1, "]");
    if (*close != ']') {
      dt_error_set(DT_ERR_CONFIG, "%s: syntax error: section header without a closing ]", where);
      return false;
    }
    size_t n = (size_t)(close - p - 1);
    char *name = dt_xmalloc(n + 1);
    memcpy(name, p + 1, n);
    name[n] = 0;
    bool known = cfg_section_known(name);
    if (!known) cfg_unknown_section(where, name);
    free(name);
    return known;
  }
  const char *sep = cfg_find_chars(p, "=:");
  if (*sep != '=' && *sep != ':') {
    dt_error_set(DT_ERR_CONFIG, "%s: syntax error: expected [section], key = value or a ; comment",
                 where);
    return false;
  }
  return true;
}

/* Read one physical line of at most `room` bytes (newline included) into st->line without
 * reading further: a line that does not fit stops the read there, so that a file of one
 * endless line (/dev/zero) costs no more than the limit. Returns the bytes read (0 at the end
 * of the file), room + 1 for a line that does not fit, -1 on a read error (errno set). */
static long cfg_read_line(cfg_parse *st, size_t room) {
  size_t len = 0;
  int c = 0;
  errno = 0;
  while (len < room && (c = getc(st->f)) != EOF) {
    st->line[len++] = (char)c;
    if (c == '\n') break;
  }
  if (c == EOF && ferror(st->f)) return -1;
  st->line[len] = 0;
  if (len == room && st->line[len - 1] != '\n') {
    /* Full without a newline: a longer line unless the file ends right here. */
    c = getc(st->f);
    if (c == EOF && ferror(st->f)) return -1;
    if (c != EOF) return (long)room + 1;
  }
  return (long)len;
}

static char *cfg_reader(char *str, int num, void *stream) {
  cfg_parse *st = stream;
  if (st->failed) return NULL;
  /* A longer line would reach inih in pieces, each parsed as a line of its own. */
  const int limit = DT_MIN(num, INI_MAX_LINE) - 3;
  const long got = cfg_read_line(st, (size_t)limit + 2); /* content, "\r\n" */
  if (got < 0) {
    dt_error_set(DT_ERR_CONFIG, "%s: cannot read: %s", st->path,
                 strerror(errno ? errno : EIO));
    st->failed = true;
    return NULL;
  }
  if (got == 0) return NULL;
  st->lineno++;
  char where[4200];
  cfg_where(st, where, sizeof where);
  size_t len = (size_t)got, content = len;
  if (got <= limit + 2) {
    if (content > 0 && st->line[content - 1] == '\n') content--;
    if (content > 0 && st->line[content - 1] == '\r') content--;
  }
  if (content > (size_t)limit) {
    dt_error_set(DT_ERR_CONFIG, "%s: line longer than the %d characters the INI parser accepts",
                 where, limit);
    st->failed = true;
    return NULL;
  }
  if (memchr(st->line, 0, len)) {
    dt_error_set(DT_ERR_CONFIG, "%s: NUL byte in the line (not a text file?)", where);
    st->failed = true;
    return NULL;
  }
  const char *p = st->line;
  if (st->lineno == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3;
  if (!cfg_check_line(p, where)) {
    st->failed = true;
    return NULL;
  }
  memcpy(str, st->line, len + 1); /* len <= limit + 2 < num */
  return str;
}

static int cfg_handler(void *user, const char *section, const char *name, const char *value) {
  cfg_parse *st = user;
  if (st->failed) return 0;
  char where[4200];
  cfg_where(st, where, sizeof where);
  const cfg_key *k = cfg_find(section, name);
  if (!*section) {
    dt_error_set(DT_ERR_CONFIG, "%s: key %s before any [section] header", where, name);
  } else if (!cfg_section_known(section)) {
    cfg_unknown_section(where, section);
  } else if (!k) {
    cfg_unknown_key(where, section, name);
  } else if (st->set_on[k - g_keys]) {
    dt_error_set(DT_ERR_CONFIG, "%s: [%s] %s given twice (first on line %d)", where, section, name,
                 st->set_on[k - g_keys]);
  } else {
    st->set_on[k - g_keys] = st->lineno;
    if (cfg_apply(st->cfg, k, value ? value : "", where, false) == DT_OK) return 1;
  }
  st->failed = true;
  return 0;
}

/* Parse the INI text of f, named `path` in messages. */
static dt_status cfg_load_stream(dt_config *cfg, const char *path, FILE *f);

dt_status dt_config_load(dt_config *cfg, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    free(cfg->source);
    cfg->source = dt_xstrdup(path);
    return dt_error_set(DT_ERR_CONFIG, "%s: cannot open: %s", path, strerror(errno));
  }
  return cfg_load_stream(cfg, path, f);
}

dt_status dt_config_load_text(dt_config *cfg, const char *text, const char *origin) {
  FILE *f = fmemopen((void *)text, strlen(text), "r");
  if (!f) return dt_error_set(DT_ERR_NOMEM, "%s: cannot read the configuration text", origin);
  return cfg_load_stream(cfg, origin, f);
}

static dt_status cfg_load_stream(dt_config *cfg, const char *path, FILE *f) {
  free(cfg->source);
  cfg->source = dt_xstrdup(path);
  cfg_parse st = {.cfg = cfg, .path = path, .f = f};
  int rc = ini_parse_stream(cfg_reader, &st, cfg_handler, &st);
  fclose(f);
  if (st.failed) return DT_ERR_CONFIG;
  /* Every non-zero return is an error; the handler and reader report their own, so what is
   * left here is inih's: a line that is neither a [section], key = value nor a comment. */
  if (rc > 0)
    return dt_error_set(DT_ERR_CONFIG,
                        "%s:%d: syntax error or line longer than %d characters (expected "
                        "[section], key = value or a ; comment)",
                        path, rc, INI_MAX_LINE);
  if (rc == -1) return dt_error_set(DT_ERR_CONFIG, "%s: cannot open", path);
  if (rc == -2) return dt_error_set(DT_ERR_CONFIG, "%s: out of memory while parsing", path);
  if (rc != 0) return dt_error_set(DT_ERR_CONFIG, "%s: cannot parse (inih returned %d)", path, rc);
  return DT_OK;
}

dt_status dt_config_set(dt_config *cfg, const char *assignment) {
  char where[4200];
  snprintf(where, sizeof where, "--set %s", assignment);
  const char *eq = strchr(assignment, '=');
  const char *dot = eq ? memchr(assignment, '.', (size_t)(eq - assignment)) : NULL;
  if (!dot)
    return dt_error_set(DT_ERR_CONFIG, "%s: expected section.key=value, e.g. train.epochs=30", where);
  char *section = cfg_strip_dup(assignment, dot);
  char *key = cfg_strip_dup(dot + 1, eq);
  char *value = cfg_strip_dup(eq + 1, eq + 1 + strlen(eq + 1));
  dt_status st;
  const cfg_key *k = cfg_find(section, key);
  if (!cfg_section_known(section))
    st = cfg_unknown_section(where, section);
  else if (!k)
    st = cfg_unknown_key(where, section, key);
  else
    st = cfg_apply(cfg, k, value, where, true);
  free(section);
  free(key);
  free(value);
  return st;
}

/* "file: [model] depth = 21" etc.: the checks here see the merged result of the file and the
 * overrides, so they name the file without a line. */
static const char *cfg_origin(const dt_config *cfg) {
  return cfg->source ? cfg->source : "configuration";
}

static void cfg_format_intlist(const dt_intlist *l, char *buf, size_t cap) {
  buf[0] = 0;
  for (int i = 0; i < l->n; i++) cfg_append(buf, cap, "%s%ld", i ? "," : "", l->v[i]);
}

/* The image shape of the configured dataset, when it can be known now: the built-in table, or
 * the header of data.path for hdf5 (a missing or bad file is reported when it is loaded, so
 * its message is dropped here). */
static bool cfg_image_shape(const dt_config *cfg, dt_dataset *shape) {
  dt_status st = cfg->data_dataset == DT_DATA_DATASET_HDF5
                     ? dt_dataset_describe_hdf5(cfg->data_path, shape)
                     : dt_dataset_describe(dt_data_dataset_str(cfg->data_dataset), shape);
  if (st == DT_OK) return true;
  dt_error_clear();
  return false;
}

/* docs/reference-experiments.md "Augmentations and losses": one batch-mixing method and one loss at
 * a time. The reference code picks silently by priority (mixup > RICAP > CutMix > label smoothing >
 * dual-cutout); a combination whose lower member would be dropped, or would break (dual-cutout's
 * two views mixed), is refused here. */
static dt_status cfg_validate_augment(const dt_config *cfg, const char *src) {
  const char *mixers[3] = {"mixup", "ricap", "cutmix"};
  const bool mixer_on[3] = {cfg->augment_mixup, cfg->augment_ricap, cfg->augment_cutmix};
  const char *mixer = NULL;
  for (int i = 0; i < 3; i++) {
    if (!mixer_on[i]) continue;
    if (mixer)
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [augment] %s = true and %s = true: only one batch-mixing method "
                          "(mixup, ricap, cutmix) may be on",
                          src, mixer, mixers[i]);
    mixer = mixers[i];
  }
  if (mixer && cfg->augment_label_smoothing > 0)
    return dt_error_set(DT_ERR_CONFIG,
                        "%s: [augment] %s = true and label_smoothing = %g: the %s loss replaces "
                        "label smoothing (one loss at a time); set label_smoothing = 0",
                        src, mixer, cfg->augment_label_smoothing, mixer);
  if (cfg->augment_dual_cutout) {
    if (mixer)
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [augment] dual_cutout = true and %s = true: the %s loss would "
                          "replace the dual-cutout loss (one loss at a time)",
                          src, mixer, mixer);
    if (cfg->augment_label_smoothing > 0)
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [augment] dual_cutout = true and label_smoothing = %g: label "
                          "smoothing would replace the dual-cutout loss (one loss at a time)",
                          src, cfg->augment_label_smoothing);
    if (cfg->augment_cutout)
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [augment] dual_cutout = true and cutout = true: dual_cutout already "
                          "applies Cutout (with the cutout_* settings) to each of its two views; "
                          "set cutout = false",
                          src);
  }
  if (cfg->augment_erasing_area_min > cfg->augment_erasing_area_max)
    return dt_error_set(DT_ERR_CONFIG,
                        "%s: [augment] erasing_area_min = %g is greater than erasing_area_max = %g",
                        src, cfg->augment_erasing_area_min, cfg->augment_erasing_area_max);
  dt_dataset shape;
  if ((cfg->augment_cutout || cfg->augment_dual_cutout) && cfg->augment_cutout_inside &&
      cfg_image_shape(cfg, &shape)) {
    int side = DT_MIN(shape.train.height, shape.train.width);
    if (cfg->augment_cutout_size > side)
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [augment] cutout_inside = true needs cutout_size <= %d, the image "
                          "size of %s (cutout_size = %ld)",
                          src, side, dt_data_dataset_str(cfg->data_dataset),
                          cfg->augment_cutout_size);
  }
  return DT_OK;
}

dt_status dt_config_validate(const dt_config *cfg) {
  const char *src = cfg_origin(cfg);
  if (cfg->data_dataset == DT_DATA_DATASET_HDF5 && !cfg->data_path[0])
    return dt_error_set(DT_ERR_CONFIG,
                        "%s: [data] dataset = hdf5 needs [data] path = FILE.h5, a file packed by "
                        "tools/dtrain_tools/pack_images.py (README \"Your own data\")",
                        src);
  dt_dataset shape;
  int height = 0, width = 0;
  if (cfg_image_shape(cfg, &shape)) {
    height = shape.train.height;
    width = shape.train.width;
  }
  /* Family-specific checks of the [model] keys (docs/reference-experiments.md "Models"), each
   * with its family in src/models/. */
  dt_status model_st = dt_model_validate(cfg, src, height, width);
  if (model_st != DT_OK) return model_st;
  if (cfg->model_preact_stage.n != 3)
    return dt_error_set(DT_ERR_CONFIG,
                        "%s: [model] preact_stage has %d values (accepted: exactly 3 booleans, one "
                        "per stage, e.g. true,false,false)",
                        src, cfg->model_preact_stage.n);
  if (cfg->schedule_warmup_epochs >= cfg->train_epochs)
    return dt_error_set(DT_ERR_CONFIG,
                        "%s: [schedule] warmup_epochs = %ld must be less than [train] epochs = %ld "
                        "(the warmup is part of the training epochs)",
                        src, cfg->schedule_warmup_epochs, cfg->train_epochs);
  const dt_intlist *m = &cfg->schedule_milestones;
  long after_warmup = cfg->train_epochs - cfg->schedule_warmup_epochs;
  char list[DT_LIST_MAX * 24];
  cfg_format_intlist(m, list, sizeof list);
  bool multistep = cfg->schedule_type == DT_SCHEDULE_TYPE_MULTISTEP;
  for (int i = 0; multistep && i < m->n; i++) {
    if (i > 0 && m->v[i] <= m->v[i - 1])
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [schedule] milestones = %s: not strictly increasing (%ld follows %ld)",
                          src, list, m->v[i], m->v[i - 1]);
    if (m->v[i] >= after_warmup)
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [schedule] milestones = %s: %ld is not less than [train] epochs - "
                          "[schedule] warmup_epochs = %ld (milestones count epochs after the warmup)",
                          src, list, m->v[i], after_warmup);
  }
  if (cfg->schedule_type == DT_SCHEDULE_TYPE_SGDR) {
    /* SGDR periods T0, T0 T_mul, ... must end exactly at the last epoch
     * (docs/reference-experiments.md "Schedules"). */
    double period = (double)cfg->schedule_t0, total = 0;
    char sums[256] = "";
    while (total + 1e-9 < (double)after_warmup && strlen(sums) < 200) {
      total += period;
      cfg_append(sums, sizeof sums, "%s%g", sums[0] ? "+" : "", period);
      period *= cfg->schedule_t_mul;
    }
    if (fabs(total - (double)after_warmup) > 1e-6)
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [schedule] sgdr periods t0 = %ld, t_mul = %g give %s = %g epochs, but "
                          "[train] epochs - [schedule] warmup_epochs = %ld: they must sum exactly",
                          src, cfg->schedule_t0, cfg->schedule_t_mul, sums, total, after_warmup);
  }
  return cfg_validate_augment(cfg, src);
}

size_t dt_config_key_count(void) { return CFG_NKEYS; }

int dt_config_choice_count(const char *section, const char *key) {
  const cfg_key *k = cfg_find(section, key);
  return k ? k->n_choices : 0;
}

const char *dt_config_choice_text(const char *section, const char *key, int i) {
  const cfg_key *k = cfg_find(section, key);
  return k && i >= 0 && i < k->n_choices ? k->choices[i] : NULL;
}

int dt_config_choice_parse(const char *section, const char *key, const char *text) {
  const cfg_key *k = cfg_find(section, key);
  return k && k->type == CFG_CHOICE ? cfg_parse_choice(k, text) : -1;
}

void dt_config_digest(const dt_config *cfg, uint64_t *out) {
  char buf[DT_STR_MAX + 64];
  for (size_t i = 0; i < CFG_NKEYS; i++) {
    cfg_format_value(buf, sizeof buf, cfg, &g_keys[i]);
    uint64_t h = 14695981039346656037ULL; /* FNV-1a, 64 bits */
    for (const unsigned char *p = (const unsigned char *)buf; *p; p++)
      h = (h ^ *p) * 1099511628211ULL;
    out[i] = h;
  }
}

long dt_config_digest_diff(const uint64_t *a, const uint64_t *b) {
  for (size_t i = 0; i < CFG_NKEYS; i++)
    if (a[i] != b[i]) return (long)i;
  return -1;
}

void dt_config_key_describe(const dt_config *cfg, size_t i, char *name, size_t name_cap,
                            char *value, size_t value_cap) {
  DT_CHECK(i < CFG_NKEYS);
  snprintf(name, name_cap, "%s.%s", g_keys[i].section, g_keys[i].key);
  cfg_format_value(value, value_cap, cfg, &g_keys[i]);
}

void dt_config_write(const dt_config *cfg, FILE *f) {
  fprintf(f, "; dtrain configuration (dtrain --help-config describes every key)\n");
  char accepted[512], line[700];
  for (size_t i = 0; i < CFG_NKEYS; i++) {
    const cfg_key *k = &g_keys[i];
    if (i == 0 || strcmp(k->section, g_keys[i - 1].section) != 0) fprintf(f, "\n[%s]\n", k->section);
    /* Comment lines obey the parser's line limit too: wrap them. */
    cfg_print_wrapped(f, "; ", k->help, 90);
    cfg_accepted(k, accepted, sizeof accepted);
    snprintf(line, sizeof line, "%s; default: %s", accepted, k->def[0] ? k->def : "(empty)");
    cfg_print_wrapped(f, "; ", line, 90);
    fprintf(f, "%s =%s", k->key, cfg_is_empty(cfg, k) ? "" : " ");
    cfg_print_value(f, cfg, k);
    fputc('\n', f);
  }
}

char *dt_config_text(const dt_config *cfg) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  DT_CHECK(f != NULL);
  dt_config_write(cfg, f);
  const int closed = fclose(f);
  DT_CHECK(closed == 0);
  return text;
}

/* Markdown cells must not contain '|'. */
static void md_cell(FILE *f, const char *text) {
  for (const char *p = text; *p; p++) {
    if (*p == '|') fputs("\\|", f);
    else fputc(*p, f);
  }
}

void dt_config_help_markdown(FILE *f) {
  char accepted[512];
  fprintf(f, "| key | type | default | accepted | meaning |\n|---|---|---|---|---|\n");
  for (size_t i = 0; i < CFG_NKEYS; i++) {
    const cfg_key *k = &g_keys[i];
    cfg_accepted(k, accepted, sizeof accepted);
    fprintf(f, "| `%s.%s` | %s | ", k->section, k->key, cfg_type_name(k->type));
    if (k->def[0]) {
      fputc('`', f);
      md_cell(f, k->def);
      fputc('`', f);
    }
    fputs(" | ", f);
    md_cell(f, accepted);
    fputs(" | ", f);
    md_cell(f, k->help);
    fputs(" |\n", f);
  }
}

void dt_config_help(FILE *f) {
  fprintf(f,
          "dtrain configuration keys. An INI file sets them as\n"
          "  [section]\n  key = value\n"
          "and --set section.key=value overrides one on the command line.\n");
  char accepted[512], head[700];
  for (size_t i = 0; i < CFG_NKEYS; i++) {
    const cfg_key *k = &g_keys[i];
    if (i == 0 || strcmp(k->section, g_keys[i - 1].section) != 0) fprintf(f, "\n[%s]\n", k->section);
    cfg_accepted(k, accepted, sizeof accepted);
    snprintf(head, sizeof head, "%s (%s, default %s)", k->key, cfg_type_name(k->type),
             k->def[0] ? k->def : "empty");
    fprintf(f, "  %s\n", head);
    cfg_print_wrapped(f, "      ", k->help, 80);
    snprintf(head, sizeof head, "accepted: %s", accepted);
    cfg_print_wrapped(f, "      ", head, 80);
  }
}
