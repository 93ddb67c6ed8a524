#include "assetfs/mime.h"
#include "assetfs/alloc.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct mime_ext {
  char *ext;    /* lower case, without the dot */
  char *type;   /* shared between the extensions of one line (owned by g_types) */
  size_t order; /* position in the file: the first line naming an extension wins */
};

/* Filled once (pthread_once or afs_mime_load before use), then read-only: no lock. */
static struct mime_ext *g_exts;
static size_t g_n_exts;
static char **g_types;
static size_t g_n_types;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static int cmp_ext(const void *a, const void *b) {
  return strcmp(((const struct mime_ext *)a)->ext, ((const struct mime_ext *)b)->ext);
}

static int cmp_ext_order(const void *a, const void *b) {
  const struct mime_ext *x = a, *y = b;
  int c = strcmp(x->ext, y->ext);
  return c ? c : (x->order > y->order) - (x->order < y->order);
}

static void push(void **arr, size_t *n, size_t *cap, size_t elem, const void *item) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 256;
    *arr = afs_xrealloc(*arr, *cap * elem);
  }
  memcpy((char *)*arr + *n * elem, item, elem);
  (*n)++;
}

int afs_mime_load(const char *table_path) {
  FILE *f = fopen(table_path, "re");
  if (!f)
    return -1;
  size_t cap_e = 0, cap_t = 0;
  char *line = NULL;
  size_t len = 0;
  while (getline(&line, &len, f) > 0) {
    char *save = NULL;
    char *type = strtok_r(line, " \t\r\n", &save);
    if (!type || type[0] == '#')
      continue;
    char *ext = strtok_r(NULL, " \t\r\n", &save);
    if (!ext)
      continue;
    char *type_copy = strdup(type);
    push((void **)&g_types, &g_n_types, &cap_t, sizeof type_copy, &type_copy);
    for (; ext; ext = strtok_r(NULL, " \t\r\n", &save)) {
      struct mime_ext e = {strdup(ext), type_copy, g_n_exts};
      for (char *p = e.ext; *p; p++)
        *p = (char)tolower((unsigned char)*p);
      push((void **)&g_exts, &g_n_exts, &cap_e, sizeof e, &e);
    }
  }
  free(line);
  fclose(f);
  qsort(g_exts, g_n_exts, sizeof *g_exts, cmp_ext_order);
  size_t w = 0;
  for (size_t r = 0; r < g_n_exts; r++) {
    if (w > 0 && strcmp(g_exts[w - 1].ext, g_exts[r].ext) == 0) {
      free(g_exts[r].ext);
      continue;
    }
    g_exts[w++] = g_exts[r];
  }
  g_n_exts = w;
  return (int)g_n_exts;
}

static void load_system(void) {
  if (g_n_exts == 0)
    afs_mime_load(AFS_MIME_TYPES_PATH);
}

const char *afs_mime_from_path(const char *path) {
  pthread_once(&g_once, load_system);
  if (!path)
    return AFS_MIME_DEFAULT;
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  const char *dot = strrchr(base, '.');
  if (!dot || dot == base || !dot[1] || strlen(dot + 1) >= 32)
    return AFS_MIME_DEFAULT;
  char ext[32];
  size_t i = 0;
  for (const char *p = dot + 1; *p; p++)
    ext[i++] = (char)tolower((unsigned char)*p);
  ext[i] = '\0';
  struct mime_ext key = {ext, NULL, 0};
  const struct mime_ext *hit = bsearch(&key, g_exts, g_n_exts, sizeof *g_exts, cmp_ext);
  return hit ? hit->type : AFS_MIME_DEFAULT;
}
