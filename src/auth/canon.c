/* Canonical messages (auth.h): what a signature covers, independent of how a client's
 * BSON library ordered or typed the fields. Each item is written as
 *   name NUL tag length ':' value
 * with tag s (string), d (number), t (date, ms), o (ObjectId hex), b (bool), n (absent),
 * a (array: its length, then its elements named by index), so no value can be read as
 * part of another. */
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/auth.h"

static void put(struct afs_canon *c, const void *p, size_t n) {
  if (c->len + n + 1 > c->cap) {
    c->cap = (c->len + n + 1) * 2;
    c->buf = afs_xrealloc(c->buf, c->cap);
  }
  memcpy(c->buf + c->len, p, n);
  c->len += n;
  c->buf[c->len] = '\0';
}

static void item(struct afs_canon *c, const char *field, char tag, const char *v, size_t n) {
  char head[40];
  put(c, field, strlen(field) + 1);
  int h = snprintf(head, sizeof head, "%c%zu:", tag, n);
  put(c, head, (size_t)h);
  put(c, v, n);
}

void afs_canon_init(struct afs_canon *c, const char *purpose) {
  memset(c, 0, sizeof *c);
  put(c, purpose, strlen(purpose) + 1);
}

void afs_canon_free(struct afs_canon *c) {
  free(c->buf);
  memset(c, 0, sizeof *c);
}

void afs_canon_str(struct afs_canon *c, const char *field, const char *v) {
  if (v)
    item(c, field, 's', v, strlen(v));
  else
    item(c, field, 'n', "", 0);
}

/* The shortest decimal that reads back as v ("24", "0.5", "1e+300"). */
static void number(struct afs_canon *c, const char *field, double v) {
  char buf[40];
  if (!isfinite(v)) {
    c->bad = true;
    return;
  }
  if (v == 0)
    v = 0; /* -0 signs as 0 */
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (strtod(buf, NULL) == v)
      break;
  }
  item(c, field, 'd', buf, strlen(buf));
}

/* An array (a function call's args): its element count, then each element as an item
 * named by its index; nested arrays too. */
static void value(struct afs_canon *c, const char *field, const bson_value_t *v, int depth);

static void array(struct afs_canon *c, const char *field, const bson_value_t *v, int depth) {
  bson_t arr;
  bson_iter_t it;
  char n[24];
  size_t count = 0;
  if (!bson_init_static(&arr, v->value.v_doc.data, v->value.v_doc.data_len) ||
      !bson_iter_init(&it, &arr)) {
    c->bad = true;
    return;
  }
  while (bson_iter_next(&it))
    count++;
  snprintf(n, sizeof n, "%zu", count);
  item(c, field, 'a', n, strlen(n));
  bson_iter_init(&it, &arr);
  for (size_t i = 0; bson_iter_next(&it); i++) {
    snprintf(n, sizeof n, "%zu", i);
    value(c, n, bson_iter_value(&it), depth + 1);
  }
}

/* depth: of arrays in arrays; a few levels are all a request needs, and a hostile
 * record's nesting must not exhaust the stack. */
static void value(struct afs_canon *c, const char *field, const bson_value_t *v, int depth) {
  char buf[40];
  switch (v ? v->value_type : BSON_TYPE_EOD) {
  case BSON_TYPE_EOD:
  case BSON_TYPE_NULL:
  case BSON_TYPE_UNDEFINED:
    item(c, field, 'n', "", 0);
    break;
  case BSON_TYPE_UTF8:
    item(c, field, 's', v->value.v_utf8.str, v->value.v_utf8.len);
    break;
  case BSON_TYPE_INT32:
    number(c, field, v->value.v_int32);
    break;
  case BSON_TYPE_INT64:
    if (v->value.v_int64 > (INT64_C(1) << 53) || v->value.v_int64 < -(INT64_C(1) << 53))
      c->bad = true; /* not exactly a double: clients could not agree on it */
    else
      number(c, field, (double)v->value.v_int64);
    break;
  case BSON_TYPE_DOUBLE:
    number(c, field, v->value.v_double);
    break;
  case BSON_TYPE_DATE_TIME:
    snprintf(buf, sizeof buf, "%" PRId64, v->value.v_datetime);
    item(c, field, 't', buf, strlen(buf));
    break;
  case BSON_TYPE_OID:
    bson_oid_to_string(&v->value.v_oid, buf);
    item(c, field, 'o', buf, 24);
    break;
  case BSON_TYPE_BOOL:
    item(c, field, 'b', v->value.v_bool ? "1" : "0", 1);
    break;
  case BSON_TYPE_ARRAY:
    if (depth >= 4)
      c->bad = true;
    else
      array(c, field, v, depth);
    break;
  default:
    c->bad = true; /* documents, binary...: nothing assetfs signs */
    break;
  }
}

void afs_canon_value(struct afs_canon *c, const char *field, const bson_value_t *v) {
  value(c, field, v, 0);
}

void afs_canon_fields(struct afs_canon *c, const bson_t *doc, const char *const *fields) {
  for (size_t i = 0; fields[i]; i++) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, fields[i]))
      afs_canon_value(c, fields[i], bson_iter_value(&it));
    else
      afs_canon_value(c, fields[i], NULL);
  }
}
