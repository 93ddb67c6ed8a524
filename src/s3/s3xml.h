/* Private to src/s3: just enough XML for S3's flat answers (ListObjectsV2, DeleteObjects,
 * multipart, <Error>) and request bodies. Not a general XML parser: S3's elements carry
 * no attributes we need, and no CDATA. */
#ifndef ASSETFS_S3XML_H
#define ASSETFS_S3XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct afs_xspan {
  const char *p, *e; /* [p, e) */
};

/* Finds the next <TAG>…</TAG> (or <TAG/>) in *in, sets *inner to its content and
 * advances in->p past it. */
bool afs_xml_next(struct afs_xspan *in, const char *tag, struct afs_xspan *inner);
/* Decoded text of the first TAG in S (malloc'd), or NULL if absent / out of memory. */
char *afs_xml_get(struct afs_xspan s, const char *tag);
/* Decodes entities (&amp; &lt; &gt; &quot; &apos; &#N; &#xH;) in S; malloc'd. */
char *afs_xml_decode(struct afs_xspan s);
/* Writes S escaped for element content; false if S holds a byte XML 1.0 cannot carry
 * (control characters other than tab/LF/CR, invalid UTF-8). */
bool afs_xml_escape(FILE *f, const char *s);
bool afs_xml_can_carry(const char *s);

#endif
