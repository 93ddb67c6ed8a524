/* Minimal XML for S3 answers and request bodies (see s3xml.h). */
#include "s3xml.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

bool afs_xml_next(struct afs_xspan *in, const char *tag, struct afs_xspan *inner) {
  size_t tl = strlen(tag);
  const char *p = in->p;
  while (p < in->e) {
    const char *lt = memchr(p, '<', (size_t)(in->e - p));
    if (!lt || (size_t)(in->e - lt) < tl + 2)
      return false;
    const char *after = lt + 1 + tl;
    if (!strncmp(lt + 1, tag, tl) && after < in->e && (*after == '>' || *after == '/')) {
      if (*after == '/') { /* <Tag/> */
        if (after + 1 >= in->e || after[1] != '>')
          return false;
        inner->p = inner->e = lt;
        in->p = after + 2;
        return true;
      }
      const char *start = after + 1;
      /* the closing tag: S3's elements of one name do not nest */
      for (const char *q = start; q + tl + 3 <= in->e; q++) {
        q = memchr(q, '<', (size_t)(in->e - q));
        if (!q || q + tl + 3 > in->e)
          return false;
        if (q[1] == '/' && !strncmp(q + 2, tag, tl) && q[2 + tl] == '>') {
          inner->p = start;
          inner->e = q;
          in->p = q + tl + 3;
          return true;
        }
      }
      return false;
    }
    p = lt + 1;
  }
  return false;
}

char *afs_xml_decode(struct afs_xspan s) {
  size_t n = (size_t)(s.e - s.p);
  char *out = malloc(n + 1), *o = out;
  if (!out)
    return NULL;
  for (const char *c = s.p; c < s.e; c++) {
    if (*c != '&') {
      *o++ = *c;
      continue;
    }
    const char *semi = memchr(c, ';', (size_t)(s.e - c));
    if (!semi || semi - c > 10) {
      *o++ = *c;
      continue;
    }
    size_t el = (size_t)(semi - c - 1);
    const char *ent = c + 1;
    uint32_t cp = 0;
    bool ok = true;
    if (el == 3 && !strncmp(ent, "amp", 3))
      cp = '&';
    else if (el == 2 && !strncmp(ent, "lt", 2))
      cp = '<';
    else if (el == 2 && !strncmp(ent, "gt", 2))
      cp = '>';
    else if (el == 4 && !strncmp(ent, "quot", 4))
      cp = '"';
    else if (el == 4 && !strncmp(ent, "apos", 4))
      cp = '\'';
    else if (el >= 2 && ent[0] == '#') {
      char num[12];
      memcpy(num, ent + 1, el - 1);
      num[el - 1] = '\0';
      char *end;
      unsigned long v =
          (num[0] == 'x' || num[0] == 'X') ? strtoul(num + 1, &end, 16) : strtoul(num, &end, 10);
      ok = *end == '\0' && v > 0 && v <= 0x10FFFF;
      cp = (uint32_t)v;
    } else {
      ok = false;
    }
    if (!ok) {
      *o++ = *c;
      continue;
    }
    /* UTF-8 is never longer than the entity that named it (&#N; >= 4 bytes) */
    if (cp < 0x80) {
      *o++ = (char)cp;
    } else if (cp < 0x800) {
      *o++ = (char)(0xC0 | (cp >> 6));
      *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *o++ = (char)(0xE0 | (cp >> 12));
      *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
      *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
      *o++ = (char)(0xF0 | (cp >> 18));
      *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
      *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
      *o++ = (char)(0x80 | (cp & 0x3F));
    }
    c = semi;
  }
  *o = '\0';
  return out;
}

char *afs_xml_get(struct afs_xspan s, const char *tag) {
  struct afs_xspan inner;
  if (!afs_xml_next(&s, tag, &inner))
    return NULL;
  return afs_xml_decode(inner);
}

static bool valid_utf8(const unsigned char *s) {
  while (*s) {
    if (*s < 0x80) {
      s++;
      continue;
    }
    int n;
    uint32_t cp;
    if ((*s & 0xE0) == 0xC0) {
      n = 1;
      cp = *s & 0x1F;
    } else if ((*s & 0xF0) == 0xE0) {
      n = 2;
      cp = *s & 0x0F;
    } else if ((*s & 0xF8) == 0xF0) {
      n = 3;
      cp = *s & 0x07;
    } else {
      return false;
    }
    for (int i = 1; i <= n; i++) {
      if ((s[i] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0xFFFE || cp == 0xFFFF)
      return false;
    s += n + 1;
  }
  return true;
}

bool afs_xml_can_carry(const char *s) {
  for (const unsigned char *c = (const unsigned char *)s; *c; c++)
    if (*c < 0x20 && *c != '\t' && *c != '\n' && *c != '\r')
      return false;
  return valid_utf8((const unsigned char *)s);
}

bool afs_xml_escape(FILE *f, const char *s) {
  if (!afs_xml_can_carry(s))
    return false;
  for (const char *c = s; *c; c++) {
    switch (*c) {
    case '&':
      fputs("&amp;", f);
      break;
    case '<':
      fputs("&lt;", f);
      break;
    case '>':
      fputs("&gt;", f);
      break;
    case '"':
      fputs("&quot;", f);
      break;
    case '\'':
      fputs("&apos;", f);
      break;
    /* as references, so XML's line-end normalisation cannot change the key */
    case '\t':
      fputs("&#9;", f);
      break;
    case '\n':
      fputs("&#10;", f);
      break;
    case '\r':
      fputs("&#13;", f);
      break;
    default:
      fputc(*c, f);
    }
  }
  return true;
}
