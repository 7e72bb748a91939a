/* The bulk pre-filter of scan.py, in C: the same answer as Scanner.scan's regex, at a few tens
 * of nanoseconds a line instead of about a microsecond (issue 17).
 *
 * scan(block, exact, prefixes, suffixes) -> (lines, rfc3339, rfc3164, picked)
 *   block     lines joined by b"\n" (sources/lines.py read_blocks)
 *   exact     tuple of bytes: tags a pack (or a site's alias) names exactly
 *   prefixes  tuple of bytes: "PREFIX*" globs, without the star
 *   suffixes  tuple of bytes: "*SUFFIX" globs, without the star
 *   picked    [(index, line, header_counted)] in log order: every line with a standard
 *             syslog header whose tag is covered (header_counted True), and every line
 *             without one (False)
 * A line is passed over (only counted, by its header's format) when it has the standard
 * header of headers.py's fast path, <PRI>? (RFC 3339 | RFC 3164 stamp) " " HOST " " TAG
 * ("[" pid "]")? ": ", and its tag is none of those. So, like the regex, it can only save
 * work, never lose a line: anything it does not recognise is picked. scan.py decides when it
 * may be used (only the tag shapes above) and tests/test_scan.py holds it to the regex.
 *
 * Reads and writes nothing but its arguments; holds the GIL throughout (no Python calls in the
 * per-line loop, so no reentrancy). Copyright: logkey's authors, GPL-2.0-or-later. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <string.h>

#define TAG_MAX 64        /* headers.TAG: one first character and up to 63 more */
#define HOST_MAX 255

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline int is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
static inline int is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
static inline int is_alnum_(unsigned char c) {
    return is_digit(c) || is_upper(c) || is_lower(c) || c == '_';
}
static inline int is_host_char(unsigned char c) {       /* [A-Za-z0-9._-] */
    return is_alnum_(c) || c == '.' || c == '-';
}
static inline int is_tag_char(unsigned char c) {        /* [A-Za-z0-9_./@+-] */
    return is_alnum_(c) || c == '.' || c == '/' || c == '@' || c == '+' || c == '-';
}

/* digits at p[0..n): all of them are digits (the caller checked the bounds) */
static inline int digits(const unsigned char *p, int n) {
    for (int i = 0; i < n; i++)
        if (!is_digit(p[i])) return 0;
    return 1;
}

/* The stamp of RFC 3339: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?
 * followed by " ". Returns the offset just past that space, or -1. The optional parts are
 * each followed by something they cannot start with, so taking them greedily, and leaving
 * one out when what follows does not fit, gives the regex's answer. */
static Py_ssize_t stamp_3339(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
    if (n - i < 20) return -1;
    const unsigned char *p = s + i;
    if (!(digits(p, 4) && p[4] == '-' && digits(p + 5, 2) && p[7] == '-' && digits(p + 8, 2)
          && p[10] == 'T' && digits(p + 11, 2) && p[13] == ':' && digits(p + 14, 2)
          && p[16] == ':' && digits(p + 17, 2)))
        return -1;
    i += 19;
    if (i < n && s[i] == '.') {
        Py_ssize_t j = i + 1;
        while (j < n && j - i - 1 < 9 && is_digit(s[j])) j++;
        if (j > i + 1 && !(j < n && is_digit(s[j]))) i = j;
        /* else: no fraction; what follows is ".", which neither a zone nor " " can start */
        else return -1;
    }
    if (i < n && s[i] == 'Z') {
        if (i + 1 < n && s[i + 1] == ' ') return i + 2;
        return -1;
    }
    if (i < n && (s[i] == '+' || s[i] == '-')) {
        /* [+-]\d\d:?\d\d then " "; with the zone left out, "+" cannot be the space */
        Py_ssize_t j = i + 1;
        if (j + 2 <= n && digits(s + j, 2)) {
            j += 2;
            if (j < n && s[j] == ':') {
                if (j + 3 < n && digits(s + j + 1, 2) && s[j + 3] == ' ') return j + 4;
            }
            if (j + 2 < n && digits(s + j, 2) && s[j + 2] == ' ') return j + 3;
        }
        return -1;
    }
    if (i < n && s[i] == ' ') return i + 1;
    return -1;
}

/* The stamp of RFC 3164: [A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d followed by " ". */
static Py_ssize_t stamp_3164(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
    if (n - i < 15) return -1;
    const unsigned char *p = s + i;
    if (!(is_upper(p[0]) && is_lower(p[1]) && is_lower(p[2]) && p[3] == ' ')) return -1;
    Py_ssize_t j = i + 4;
    /* "[ \d]?\d ": two characters, or one digit */
    if ((s[j] == ' ' || is_digit(s[j])) && is_digit(s[j + 1]) && s[j + 2] == ' ') j += 3;
    else if (is_digit(s[j]) && s[j + 1] == ' ') j += 2;
    else return -1;
    if (n - j < 9) return -1;
    p = s + j;
    if (digits(p, 2) && p[2] == ':' && digits(p + 3, 2) && p[5] == ':' && digits(p + 6, 2)
        && p[8] == ' ')
        return j + 9;
    return -1;
}

typedef struct {
    const char *s;
    Py_ssize_t n;
} word;

/* A set of words, by length (exact tags are compared only with those of the tag's length) and
 * by first and last byte (most tags of a mail log, Postfix's, start or end with none of the
 * covered ones' bytes, and are passed over without a comparison). */
typedef struct {
    word *w;                    /* sorted by length */
    Py_ssize_t count;
    Py_ssize_t by_len[TAG_MAX + 2];     /* words of length L: w[by_len[L] .. by_len[L + 1]) */
    unsigned char first[256], last[256];
} words;

static int by_length(const void *a, const void *b) {
    Py_ssize_t x = ((const word *)a)->n, y = ((const word *)b)->n;
    return (x > y) - (x < y);
}

static int load_words(PyObject *tuple, words *out, const char *what) {
    if (!PyTuple_Check(tuple)) {
        PyErr_Format(PyExc_TypeError, "%s: a tuple of bytes", what);
        return -1;
    }
    out->count = PyTuple_GET_SIZE(tuple);
    out->w = PyMem_Malloc(sizeof(word) * (out->count ? out->count : 1));
    if (out->w == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(out->first, 0, sizeof out->first);
    memset(out->last, 0, sizeof out->last);
    for (Py_ssize_t k = 0; k < out->count; k++) {
        PyObject *b = PyTuple_GET_ITEM(tuple, k);
        if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) > TAG_MAX) {
            PyMem_Free(out->w);
            out->w = NULL;
            PyErr_Format(PyExc_TypeError, "%s: a tuple of bytes of at most %d", what, TAG_MAX);
            return -1;
        }
        out->w[k].s = PyBytes_AS_STRING(b);
        out->w[k].n = PyBytes_GET_SIZE(b);
        if (out->w[k].n == 0) {             /* "*": every tag */
            memset(out->first, 1, sizeof out->first);
            memset(out->last, 1, sizeof out->last);
        } else {
            out->first[(unsigned char)out->w[k].s[0]] = 1;
            out->last[(unsigned char)out->w[k].s[out->w[k].n - 1]] = 1;
        }
    }
    qsort(out->w, out->count, sizeof(word), by_length);
    Py_ssize_t k = 0;
    for (Py_ssize_t len = 0; len <= TAG_MAX + 1; len++) {
        while (k < out->count && out->w[k].n < len) k++;
        out->by_len[len] = k;
    }
    return 0;
}

static int covered(const unsigned char *tag, Py_ssize_t len, const words *exact,
                   const words *prefixes, const words *suffixes) {
    /* len is 1..TAG_MAX (standard_header) */
    if (exact->first[tag[0]])
        for (Py_ssize_t k = exact->by_len[len]; k < exact->by_len[len + 1]; k++)
            if (memcmp(exact->w[k].s, tag, len) == 0) return 1;
    if (prefixes->first[tag[0]] || prefixes->by_len[1] > 0)
        for (Py_ssize_t k = 0; k < prefixes->by_len[len + 1]; k++)
            if (memcmp(prefixes->w[k].s, tag, prefixes->w[k].n) == 0) return 1;
    if (suffixes->last[tag[len - 1]] || suffixes->by_len[1] > 0)
        for (Py_ssize_t k = 0; k < suffixes->by_len[len + 1]; k++)
            if (memcmp(suffixes->w[k].s, tag + len - suffixes->w[k].n, suffixes->w[k].n) == 0)
                return 1;
    return 0;
}

/* The three word sets of a call, kept from the last call: the callers (scan.py, engine.py)
 * pass the same three tuples every time, so they are read once, not once per line or block.
 * The tuples are held (immutable), so the same objects mean the same words. */
typedef struct {
    PyObject *tuples[3];
    words sets[3];
} tagset;

static tagset last_tags;

static void free_tagset(tagset *t) {
    for (int k = 0; k < 3; k++) {
        PyMem_Free(t->sets[k].w);
        t->sets[k].w = NULL;
        Py_CLEAR(t->tuples[k]);
    }
}

static const tagset *load_tagset(PyObject *exact, PyObject *prefixes, PyObject *suffixes) {
    PyObject *tuples[3] = {exact, prefixes, suffixes};
    static const char *what[3] = {"exact", "prefixes", "suffixes"};
    if (last_tags.tuples[0] == exact && last_tags.tuples[1] == prefixes
        && last_tags.tuples[2] == suffixes)
        return &last_tags;
    tagset fresh = {{NULL, NULL, NULL}, {{0}}};
    for (int k = 0; k < 3; k++) {
        if (load_words(tuples[k], &fresh.sets[k], what[k]) < 0) {
            free_tagset(&fresh);
            return NULL;
        }
        Py_INCREF(tuples[k]);
        fresh.tuples[k] = tuples[k];
    }
    free_tagset(&last_tags);
    last_tags = fresh;
    return &last_tags;
}

/* Where the pieces of a standard header are: headers.py's SYSLOG_3339 / SYSLOG_3164 and
 * from_fast_match read the same. */
typedef struct {
    int format;                 /* 1 RFC 3339, 2 RFC 3164 */
    Py_ssize_t stamp, stamp_end, host, host_end, tag, tag_end, pid, pid_end, message;
} header_span;

/* 1 when s[0..n) starts with a standard header (its pieces in *h), 0 otherwise. */
static int standard_header(const unsigned char *s, Py_ssize_t n, header_span *h) {
    Py_ssize_t i = 0;
    if (n > 0 && s[0] == '<') {                 /* (?:<\d{1,3}>)? */
        Py_ssize_t j = 1;
        while (j < n && j <= 3 && is_digit(s[j])) j++;
        if (j > 1 && j < n && s[j] == '>') i = j + 1;
        /* else no PRI: the stamp would have to start with "<", which none does */
        else return 0;
    }
    Py_ssize_t after;
    h->stamp = i;
    if (i < n && is_digit(s[i])) {
        after = stamp_3339(s, i, n);
        h->format = 1;
    } else {
        after = stamp_3164(s, i, n);
        h->format = 2;
    }
    if (after < 0) return 0;
    h->stamp_end = after - 1;
    /* HOST: [A-Za-z0-9._-]{1,255} | "(none)", then " " */
    Py_ssize_t j = after;
    h->host = j;
    if (n - j >= 7 && memcmp(s + j, "(none) ", 7) == 0) {
        j += 6;
    } else {
        while (j < n && j - after < HOST_MAX && is_host_char(s[j])) j++;
        if (j == after || j >= n || s[j] != ' ') return 0;
    }
    h->host_end = j++;
    /* TAG: [A-Za-z0-9_][A-Za-z0-9_./@+-]{0,63} taken possessively, then (?:\[\d{1,10}\])?": " */
    Py_ssize_t t = j;
    if (t >= n || !is_alnum_(s[t])) return 0;
    j = t + 1;
    while (j < n && j - t < TAG_MAX && is_tag_char(s[j])) j++;
    h->tag = t;
    h->tag_end = j;
    h->pid = h->pid_end = -1;
    if (j < n && s[j] == '[') {
        Py_ssize_t k = j + 1;
        while (k < n && k - j - 1 < 10 && is_digit(s[k])) k++;
        if (k > j + 1 && k + 2 < n && s[k] == ']' && s[k + 1] == ':' && s[k + 2] == ' ') {
            h->pid = j + 1;
            h->pid_end = k;
            h->message = k + 3;
            return 1;
        }
        return 0;       /* with the pid left out, "[" would have to be ":" */
    }
    if (j + 1 < n && s[j] == ':' && s[j + 1] == ' ') {
        h->message = j + 2;
        return 1;
    }
    return 0;
}

/* 0: a standard header, tag not covered; 1: covered; 2: no standard header. *format: 1 for
 * RFC 3339, 2 for RFC 3164 (when 0 or 1). */
static int classify(const unsigned char *s, Py_ssize_t n, const words *exact,
                    const words *prefixes, const words *suffixes, int *format) {
    header_span h;
    if (!standard_header(s, n, &h)) return 2;
    *format = h.format;
    return covered(s + h.tag, h.tag_end - h.tag, exact, prefixes, suffixes);
}

/* The arguments of scan() and classify(): (bytes, exact, prefixes, suffixes). */
static const tagset *subject_and_tags(PyObject *args, PyObject **subject) {
    PyObject *exact_t, *prefix_t, *suffix_t;
    if (!PyArg_ParseTuple(args, "SO!O!O!", subject, &PyTuple_Type, &exact_t, &PyTuple_Type,
                          &prefix_t, &PyTuple_Type, &suffix_t))
        return NULL;
    return load_tagset(exact_t, prefix_t, suffix_t);
}

static PyObject *fastscan_scan(PyObject *self, PyObject *args) {
    PyObject *block;
    const tagset *tags = subject_and_tags(args, &block);
    if (tags == NULL) return NULL;
    PyObject *picked = NULL, *result = NULL;
    picked = PyList_New(0);
    if (picked == NULL) goto done;
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(block);
    Py_ssize_t size = PyBytes_GET_SIZE(block);
    Py_ssize_t start = 0, index = 0, n3339 = 0, n3164 = 0;
    for (;;) {
        const unsigned char *nl = memchr(s + start, '\n', size - start);
        Py_ssize_t end = nl ? (Py_ssize_t)(nl - s) : size;
        int format = 0;
        int kind = classify(s + start, end - start, &tags->sets[0], &tags->sets[1],
                            &tags->sets[2], &format);
        if (kind != 2) {
            if (format == 1) n3339++;
            else n3164++;
        }
        if (kind != 0) {
            PyObject *item = Py_BuildValue("(ny#O)", index, (const char *)s + start,
                                           end - start, kind == 1 ? Py_True : Py_False);
            if (item == NULL || PyList_Append(picked, item) < 0) {
                Py_XDECREF(item);
                goto done;
            }
            Py_DECREF(item);
        }
        index++;
        if (nl == NULL) break;
        start = end + 1;
    }
    result = Py_BuildValue("(nnnO)", index, n3339, n3164, picked);
done:
    Py_XDECREF(picked);
    return result;
}

/* classify(line, exact, prefixes, suffixes) -> kind | format << 2, for one line: kind 0 a
 * standard header whose tag no pack covers, 1 a covered tag, 2 no standard header; format 1
 * RFC 3339, 2 RFC 3164 (0 with kind 2). The watcher's per-line fast path (engine.py). */
static PyObject *fastscan_classify(PyObject *self, PyObject *args) {
    PyObject *line;
    const tagset *tags = subject_and_tags(args, &line);
    if (tags == NULL) return NULL;
    int format = 0;
    int kind = classify((const unsigned char *)PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line),
                        &tags->sets[0], &tags->sets[1], &tags->sets[2], &format);
    return PyLong_FromLong(kind | (kind == 2 ? 0 : format << 2));
}

static PyObject *format_names[3];

/* header(line) -> (format, stamp, host, program, pid, message, rest) of a line with a standard
 * header, what headers.from_fast_match gives (before its Solaris msgid check); None otherwise. */
static PyObject *fastscan_header(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "header: bytes");
        return NULL;
    }
    const char *s = PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    header_span h;
    if (!standard_header((const unsigned char *)s, n, &h)) Py_RETURN_NONE;
    PyObject *pid;
    if (h.pid >= 0) {
        pid = PyUnicode_DecodeASCII(s + h.pid, h.pid_end - h.pid, NULL);
    } else {
        pid = Py_None;
        Py_INCREF(pid);
    }
    if (pid == NULL) return NULL;
    PyObject *out = Py_BuildValue("(Oy#y#NNy#y#)", format_names[h.format],
                                  s + h.stamp, h.stamp_end - h.stamp, s + h.host,
                                  h.host_end - h.host,
                                  PyUnicode_DecodeASCII(s + h.tag, h.tag_end - h.tag, NULL),
                                  pid, s + h.message, n - h.message, s + h.stamp_end + 1,
                                  n - h.stamp_end - 1);
    return out;
}

/* ---- The covered lines of a block, for bulk reading (fastpath.py) -------------------------
 *
 * match_picks(picks, ctx, timeout, cap) -> (entries, hits, timeouts, not_pop_imap)
 *   picks    scan()'s [(index, line, header_counted)]
 *   ctx      fastpath.FastPath.context: (table, plan_for, slow, no_match, fields, protocol_of,
 *            stamp_time, canonical)
 *   entries  [(index, packed event, None)]: what bulk.py's per-line loop gives for the same
 *            lines, in the same order
 *   hits     [(pack, rule id)], one per rule match counted here (the caller adds them up)
 * An ordinary line (a standard header, a tag whose plan is in the table, a rule without a
 * proxy, an IP in canonical form or one canonical_ip accepts) is read here: the header, the
 * message's decoding, the rule's match (by calling the pack's compiled regex, the regex
 * module's, with the time limit the caller passes), its groups, the protocol, the login check,
 * the event. Everything else goes to the Python callbacks: slow() reads the whole line as
 * Engine.match_picked does (before anything is counted here, so nothing is counted twice),
 * no_match() a line no rule matched, fields() a rule's key=value list, protocol_of() a protocol
 * name not seen before, stamp_time() a stamp, canonical() an address not in canonical form.
 * tests/test_fastpath.py holds this to the per-line path on every pack's samples and on
 * hostile lines. */

static long long match_ticket;   /* the matches started here, for the time limit (timelimit.py) */
static int in_match;             /* 1 while one runs */

/* ticket() -> the running match's ticket (negative: never one of match.py's), or None */
static PyObject *fastscan_ticket(PyObject *self, PyObject *unused) {
    if (!in_match) Py_RETURN_NONE;
    return PyLong_FromLongLong(-match_ticket);
}

/* events.py's _CANONICAL_IPV4, fullmatch: four octets 0..255 in ASCII digits, no leading zero */
static int canonical_quad(const char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (int octet = 0; octet < 4; octet++) {
        if (octet) {
            if (i >= n || s[i] != '.') return 0;
            i++;
        }
        Py_ssize_t start = i;
        int value = 0;
        while (i < n && i - start < 3 && is_digit((unsigned char)s[i])) value = value * 10 + (s[i++] - '0');
        if (i == start || (i - start > 1 && s[start] == '0') || value > 255) return 0;
    }
    return i == n;
}

/* The canonical form of `ip` (a new reference), None when canonical() refuses it, NULL on error. */
static PyObject *canonical_ip(PyObject *ip, PyObject *canonical) {
    Py_ssize_t n;
    const char *s = PyUnicode_Check(ip) ? PyUnicode_AsUTF8AndSize(ip, &n) : NULL;
    if (s == NULL) {
        PyErr_Clear();
        return PyObject_CallOneArg(canonical, ip);
    }
    if (canonical_quad(s, n)) {
        Py_INCREF(ip);
        return ip;
    }
    if (n > 7 && s[0] == ':' && s[1] == ':' && (s[2] | 0x20) == 'f' && (s[3] | 0x20) == 'f'
        && (s[4] | 0x20) == 'f' && (s[5] | 0x20) == 'f' && s[6] == ':' && canonical_quad(s + 7, n - 7))
        return PyUnicode_DecodeASCII(s + 7, n - 7, NULL);
    return PyObject_CallOneArg(canonical, ip);
}

static PyObject *group_at(PyObject *groups, PyObject *idx, Py_ssize_t k) {
    Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(idx, k));
    if (at < 0 || at >= PyTuple_GET_SIZE(groups)) return Py_None;
    return PyTuple_GET_ITEM(groups, at);        /* borrowed */
}

typedef struct {
    PyObject *table, *plan_for, *slow, *no_match, *fields, *protocol_of, *stamp_time, *canonical;
    PyObject *timeout, *entries, *hits;
    Py_ssize_t cap;
    long timeouts, not_pop_imap;
    int last_format;            /* the last stamp read, and its packed time */
    PyObject *last_stamp, *last_time;
    int last_offset;            /* the last non-zero UTC offset read in C, and its tzinfo */
    PyObject *last_zone;
    PyTypeObject *match_type;   /* the type of the last match object, and its groups() */
    PyObject *groups_of;
} block_state;

enum { LINE_DONE = 0, LINE_SLOW = 1, LINE_ERROR = -1 };

/* A tuple built here holds strings, numbers, None, tzinfos and other such tuples: none of them
 * can be part of a reference cycle, so the collector need not track it. CPython finds that
 * out itself, but only when a collection walks the tuple (_PyTuple_MaybeUntrack), and a
 * worker's results live until its chunk is done: about a tenth of a worker's CPU went into
 * walking them. The same test as CPython's: no item the collector tracks or may track. */
static void untrack_if_atomic(PyObject *tuple) {
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tuple); k++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, k);
        /* another container may be untracked now and tracked later (a dict): only a tuple
         * (immutable) that is untracked stays so, as in _PyTuple_MaybeUntrack */
        if (PyObject_IS_GC(item) && (!PyTuple_CheckExact(item) || PyObject_GC_IsTracked(item)))
            return;
    }
    if (PyObject_GC_IsTracked(tuple)) PyObject_GC_UnTrack(tuple);
}

/* The same for an entry the per-line path made in Python (fastpath.packed_entry): (index,
 * event or None, cut mark or None), the event's time at 4, the cut mark's key at 0. */
static void untrack_entry(PyObject *entry) {
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3) return;
    PyObject *event = PyTuple_GET_ITEM(entry, 1), *cut = PyTuple_GET_ITEM(entry, 2);
    if (PyTuple_Check(event) && PyTuple_GET_SIZE(event) > 4) {
        if (PyTuple_Check(PyTuple_GET_ITEM(event, 4))) untrack_if_atomic(PyTuple_GET_ITEM(event, 4));
        untrack_if_atomic(event);
    }
    if (PyTuple_Check(cut) && PyTuple_GET_SIZE(cut) > 2) {
        if (PyTuple_Check(PyTuple_GET_ITEM(cut, 0))) untrack_if_atomic(PyTuple_GET_ITEM(cut, 0));
        if (PyTuple_Check(PyTuple_GET_ITEM(cut, 2))) untrack_if_atomic(PyTuple_GET_ITEM(cut, 2));
        untrack_if_atomic(cut);
    }
    untrack_if_atomic(entry);
}

static int number(const unsigned char *p, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) v = v * 10 + (p[i] - '0');
    return v;
}

/* Days from 1970-01-01 to a date of the proleptic Gregorian calendar (as datetime's). */
static long long days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

static int days_in_month(int y, int m) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) ? 29 : days[m - 1];
}

/* The packed time of an RFC 3339 stamp of the shape nearly every such log has (rsyslog's file
 * format): YYYY-MM-DDTHH:MM:SS, no fraction or 3 or 6 digits of one, then Z or +HH:MM/-HH:MM,
 * a valid date and time of years 1685..2255: (POSIX time, tzinfo) as Clock.stamp_time and
 * events.packed_time give it (datetime.fromisoformat, then timestamp(): the microseconds since
 * the epoch divided by 10**6, rounded once, which a double does the same way only where those
 * microseconds are exact in it, under 2**53; UTC as datetime.timezone.utc, as fromisoformat
 * gives it for Z, +00:00 and -00:00). Any other stamp: NULL without an error, and Python reads
 * it. tests/test_fastpath.py holds the two to the same answers. */
static PyObject *rfc3339_packed(block_state *st, const unsigned char *p, Py_ssize_t len) {
    if (len < 20 || p[10] != 'T') return NULL;      /* the scanner checked the digits */
    int year = number(p, 4), month = number(p + 5, 2), day = number(p + 8, 2);
    int hour = number(p + 11, 2), minute = number(p + 14, 2), second = number(p + 17, 2);
    if (year < 1685 || year > 2255 || month < 1 || month > 12 || day < 1
        || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59)
        return NULL;
    Py_ssize_t z = 19;
    long long micro = 0;
    if (p[z] == '.') {
        Py_ssize_t k = z + 1;
        while (k < len && is_digit(p[k])) k++;
        if (k - z - 1 == 3) micro = number(p + z + 1, 3) * 1000LL;
        else if (k - z - 1 == 6) micro = number(p + z + 1, 6);
        else return NULL;
        z = k;
    }
    int offset;
    if (len == z + 1 && p[z] == 'Z') {
        offset = 0;
    } else if (len == z + 6 && (p[z] == '+' || p[z] == '-') && p[z + 3] == ':'
               && digits(p + z + 1, 2) && digits(p + z + 4, 2)) {
        int hh = number(p + z + 1, 2), mm = number(p + z + 4, 2);
        if (hh > 23 || mm > 59) return NULL;
        offset = (p[z] == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
    } else {
        return NULL;
    }
    long long seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60
                        + second - offset;
    long long total = seconds * 1000000 + micro;
    if (total >= (1LL << 53) || total <= -(1LL << 53))
        return NULL;        /* at the ends of those years, with the offset */
    PyObject *ts = PyFloat_FromDouble((double)total / 1e6);
    if (ts == NULL) return NULL;
    PyObject *tz;
    if (offset == 0) {
        tz = Py_NewRef(PyDateTime_TimeZone_UTC);
    } else if (st->last_zone != NULL && st->last_offset == offset) {
        tz = Py_NewRef(st->last_zone);
    } else {
        PyObject *delta = PyDelta_FromDSU(0, offset, 0);
        tz = delta == NULL ? NULL : PyTimeZone_FromOffset(delta);
        Py_XDECREF(delta);
        if (tz == NULL) {
            Py_DECREF(ts);
            return NULL;
        }
        Py_XSETREF(st->last_zone, Py_NewRef(tz));
        st->last_offset = offset;
    }
    PyObject *t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(ts);
        Py_DECREF(tz);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, ts);
    PyTuple_SET_ITEM(t, 1, tz);
    untrack_if_atomic(t);
    return t;
}

/* The packed time of the line's stamp (a new reference): the last stamp's answer, or read
 * here (rfc3339_packed), or through stamp_time(). */
static PyObject *packed_time(block_state *st, const char *s, const header_span *h) {
    Py_ssize_t len = h->stamp_end - h->stamp;
    if (st->last_stamp != NULL && st->last_format == h->format
        && PyBytes_GET_SIZE(st->last_stamp) == len
        && memcmp(PyBytes_AS_STRING(st->last_stamp), s + h->stamp, len) == 0) {
        Py_INCREF(st->last_time);
        return st->last_time;
    }
    if (h->format == 1) {
        PyObject *t = rfc3339_packed(st, (const unsigned char *)s + h->stamp, len);
        if (t != NULL || PyErr_Occurred()) return t;
    }
    PyObject *stamp = PyBytes_FromStringAndSize(s + h->stamp, len);
    if (stamp == NULL) return NULL;
    PyObject *t = PyObject_CallFunctionObjArgs(st->stamp_time, format_names[h->format], stamp, NULL);
    if (t == NULL) {
        Py_DECREF(stamp);
        return NULL;
    }
    Py_XSETREF(st->last_stamp, stamp);
    if (PyTuple_Check(t)) untrack_if_atomic(t);
    Py_INCREF(t);
    Py_XSETREF(st->last_time, t);
    st->last_format = h->format;
    return t;
}

static int one_line(block_state *st, PyObject *index, PyObject *line) {
    const char *s = PyBytes_AS_STRING(line);
    Py_ssize_t n = PyBytes_GET_SIZE(line);
    header_span h;
    if (n == 0 || s[n - 1] == '\r' || n > st->cap) return LINE_SLOW;
    if (!standard_header((const unsigned char *)s, n, &h)) return LINE_SLOW;
    if (n - h.message >= 4 && memcmp(s + h.message, "[ID ", 4) == 0) return LINE_SLOW;
    int rc = LINE_ERROR;
    PyObject *program = NULL, *plan = NULL, *message = NULL, *m = NULL, *groups = NULL;
    PyObject *header_pid = NULL, *ip = NULL, *user = NULL, *protocol = NULL, *session = NULL;
    PyObject *pid = NULL, *picked = NULL, *time = NULL, *host = NULL, *event = NULL;
    PyObject *cut = NULL;
    program = PyUnicode_DecodeASCII(s + h.tag, h.tag_end - h.tag, NULL);
    if (program == NULL) goto done;
    plan = PyDict_GetItemWithError(st->table, program);
    if (plan == NULL) {
        if (PyErr_Occurred()) goto done;
        plan = PyObject_CallOneArg(st->plan_for, program);
        if (plan == NULL) goto done;
    } else {
        Py_INCREF(plan);
    }
    if (plan == Py_None) {
        rc = LINE_SLOW;
        goto done;
    }
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 6) {
        PyErr_SetString(PyExc_TypeError, "match_picks: a plan is a 6-tuple");
        goto done;
    }
    PyObject *fullmatch = PyTuple_GET_ITEM(plan, 0), *dispatch = PyTuple_GET_ITEM(plan, 1);
    PyObject *folds = PyTuple_GET_ITEM(plan, 2), *idx = PyTuple_GET_ITEM(plan, 3);
    PyObject *markers = PyTuple_GET_ITEM(plan, 4), *cut_at = PyTuple_GET_ITEM(plan, 5);
    if (cut_at != Py_None) {
        /* Engine.match_header's cut mark: ((host, program), long, time), for every line of a
         * tag whose logger cuts long messages, whatever the line gives */
        Py_ssize_t at = PyLong_AsSsize_t(cut_at);
        if (at == -1 && PyErr_Occurred()) goto done;
        time = packed_time(st, s, &h);
        if (time == NULL) goto done;
        cut = Py_BuildValue("((y#O)OO)", s + h.host, h.host_end - h.host, program,
                            n - h.message >= at ? Py_True : Py_False, time);
        if (cut == NULL) goto done;
        untrack_if_atomic(PyTuple_GET_ITEM(cut, 0));
        untrack_if_atomic(cut);
    }
    message = PyUnicode_DecodeUTF8(s + h.message, n - h.message, "surrogateescape");
    if (message == NULL) goto done;
    PyObject *call[6] = {message, Py_None, Py_None, Py_False, Py_False, st->timeout};
    match_ticket++;
    in_match = 1;
    m = PyObject_Vectorcall(fullmatch, call, 6, NULL);
    in_match = 0;
    if (m == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TimeoutError)) {
            PyErr_Clear();
            st->timeouts++;
            goto finish;
        }
        goto done;
    }
    if (m == Py_None) {
        PyObject *r = PyObject_CallFunctionObjArgs(st->no_match, dispatch, program, message, index,
                                                   folds == Py_True ? Py_False : Py_None, NULL);
        if (r == NULL) goto done;
        Py_DECREF(r);
        goto finish;
    }
    if (st->groups_of == NULL || st->match_type != Py_TYPE(m)) {
        /* the match type's groups(), looked up once a call instead of once a line */
        PyObject *method = PyObject_GetAttrString((PyObject *)Py_TYPE(m), "groups");
        if (method == NULL) goto done;
        Py_XSETREF(st->groups_of, method);
        st->match_type = Py_TYPE(m);
    }
    groups = PyObject_CallOneArg(st->groups_of, m);
    if (groups == NULL) goto done;
    if (!PyTuple_Check(groups)) {
        PyErr_SetString(PyExc_TypeError, "match_picks: groups() is not a tuple");
        goto done;
    }
    PyObject *rplan = NULL;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(markers); k++) {
        PyObject *marker = PyTuple_GET_ITEM(markers, k);
        if (group_at(groups, marker, 0) != Py_None) {
            rplan = PyTuple_GET_ITEM(marker, 1);
            break;
        }
    }
    if (rplan == NULL) {                        /* a known non-event's branch matched */
        PyObject *r = PyObject_CallFunctionObjArgs(st->no_match, dispatch, program, message, index,
                                                   Py_True, NULL);
        if (r == NULL) goto done;
        Py_DECREF(r);
        goto finish;
    }
    /* rplan: (rule, hits key, kind, is login, pack, rule id, join, has fields, protocol fixed,
     *         protocol value, protocol memo) */
    PyObject *rule = PyTuple_GET_ITEM(rplan, 0);
    if (h.pid >= 0) {
        header_pid = PyUnicode_DecodeASCII(s + h.pid, h.pid_end - h.pid, NULL);
        if (header_pid == NULL) goto done;
    } else {
        header_pid = Py_NewRef(Py_None);
    }
    if (PyTuple_GET_ITEM(rplan, 7) == Py_True) {        /* a key=value list: fields() reads it */
        picked = PyObject_CallFunctionObjArgs(st->fields, rule, groups, PyTuple_GET_ITEM(plan, 3),
                                              program, header_pid, NULL);
        if (picked == NULL) goto done;
        if (picked == Py_None) {                /* refused, or vouched for by a proxy */
            rc = LINE_SLOW;
            goto done;
        }
        if (!PyTuple_Check(picked) || PyTuple_GET_SIZE(picked) != 5) {
            PyErr_SetString(PyExc_TypeError, "match_picks: fields() gives a 5-tuple");
            goto done;
        }
        ip = Py_NewRef(PyTuple_GET_ITEM(picked, 0));
        user = Py_NewRef(PyTuple_GET_ITEM(picked, 1));
        protocol = Py_NewRef(PyTuple_GET_ITEM(picked, 2));
        session = Py_NewRef(PyTuple_GET_ITEM(picked, 3));
        pid = Py_NewRef(PyTuple_GET_ITEM(picked, 4));
    } else {
        if (group_at(groups, idx, 6) != Py_None) {      /* a proxy vouches: slow() checks it */
            rc = LINE_SLOW;
            goto done;
        }
        ip = Py_NewRef(group_at(groups, idx, 0));
        user = Py_NewRef(group_at(groups, idx, 1));
        session = Py_NewRef(group_at(groups, idx, 3));
        PyObject *own_pid = group_at(groups, idx, 4);
        pid = Py_NewRef(PyObject_IsTrue(own_pid) == 1 ? own_pid : header_pid);
        if (PyTuple_GET_ITEM(rplan, 8) == Py_True) {
            protocol = Py_NewRef(PyTuple_GET_ITEM(rplan, 9));
        } else {
            PyObject *raw = group_at(groups, idx, 2);
            if (raw == Py_None) {
                protocol = Py_NewRef(Py_None);
            } else {
                PyObject *memo = PyTuple_GET_ITEM(rplan, 10);
                protocol = PyDict_GetItemWithError(memo, raw);
                if (protocol != NULL) {
                    Py_INCREF(protocol);
                } else {
                    if (PyErr_Occurred()) goto done;
                    protocol = PyObject_CallFunctionObjArgs(st->protocol_of, rule, raw, memo, NULL);
                    if (protocol == NULL) goto done;
                }
            }
        }
    }
    if (ip != Py_None) {
        PyObject *canonical = canonical_ip(ip, st->canonical);
        if (canonical == NULL) goto done;
        Py_SETREF(ip, canonical);
        if (ip == Py_None) {                    /* not an address: slow() counts and says so */
            rc = LINE_SLOW;
            goto done;
        }
    }
    if (PyList_Append(st->hits, PyTuple_GET_ITEM(rplan, 1)) < 0) goto done;
    if (PyTuple_GET_ITEM(rplan, 3) == Py_True && !(PyUnicode_Check(protocol) && (
            PyUnicode_CompareWithASCIIString(protocol, "pop3") == 0
            || PyUnicode_CompareWithASCIIString(protocol, "imap") == 0))) {
        st->not_pop_imap++;
        goto finish;
    }
    if (time == NULL) {
        time = packed_time(st, s, &h);
        if (time == NULL) goto done;
    }
    host = PyUnicode_DecodeASCII(s + h.host, h.host_end - h.host, NULL);
    if (host == NULL) goto done;
    event = PyTuple_Pack(12, PyTuple_GET_ITEM(rplan, 2), ip, user, protocol, time,
                         PyTuple_GET_ITEM(rplan, 4), PyTuple_GET_ITEM(rplan, 5), session, pid,
                         PyTuple_GET_ITEM(rplan, 6), host, format_names[h.format]);
    if (event == NULL) goto done;
    untrack_if_atomic(event);
finish:
    if (event != NULL || cut != NULL) {
        PyObject *entry = PyTuple_Pack(3, index, event ? event : Py_None, cut ? cut : Py_None);
        if (entry != NULL) untrack_if_atomic(entry);
        if (entry == NULL || PyList_Append(st->entries, entry) < 0) {
            Py_XDECREF(entry);
            goto done;
        }
        Py_DECREF(entry);
    }
    rc = LINE_DONE;
done:
    Py_XDECREF(program);
    Py_XDECREF(plan);
    Py_XDECREF(message);
    Py_XDECREF(m);
    Py_XDECREF(groups);
    Py_XDECREF(header_pid);
    Py_XDECREF(picked);
    Py_XDECREF(ip);
    Py_XDECREF(user);
    Py_XDECREF(protocol);
    Py_XDECREF(session);
    Py_XDECREF(pid);
    Py_XDECREF(time);
    Py_XDECREF(host);
    Py_XDECREF(event);
    Py_XDECREF(cut);
    return rc;
}

static PyObject *fastscan_match_picks(PyObject *self, PyObject *args) {
    PyObject *picks, *ctx, *timeout;
    Py_ssize_t cap;
    if (!PyArg_ParseTuple(args, "O!O!On", &PyList_Type, &picks, &PyTuple_Type, &ctx, &timeout,
                          &cap))
        return NULL;
    if (PyTuple_GET_SIZE(ctx) != 8 || !PyDict_Check(PyTuple_GET_ITEM(ctx, 0))) {
        PyErr_SetString(PyExc_TypeError, "match_picks: ctx is (table, 7 callables)");
        return NULL;
    }
    block_state st = {0};
    PyObject **slot[8] = {&st.table, &st.plan_for, &st.slow, &st.no_match, &st.fields,
                          &st.protocol_of, &st.stamp_time, &st.canonical};
    for (int k = 0; k < 8; k++) *slot[k] = PyTuple_GET_ITEM(ctx, k);
    st.timeout = timeout;
    st.cap = cap;
    st.entries = PyList_New(0);
    st.hits = PyList_New(0);
    PyObject *result = NULL;
    if (st.entries == NULL || st.hits == NULL) goto done;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(picks); k++) {
        PyObject *pick = PyList_GET_ITEM(picks, k);
        if (!PyTuple_Check(pick) || PyTuple_GET_SIZE(pick) != 3
            || !PyBytes_Check(PyTuple_GET_ITEM(pick, 1))) {
            PyErr_SetString(PyExc_TypeError, "match_picks: picks are (index, bytes, counted)");
            goto done;
        }
        PyObject *index = PyTuple_GET_ITEM(pick, 0), *line = PyTuple_GET_ITEM(pick, 1);
        int rc = PyTuple_GET_ITEM(pick, 2) == Py_True ? one_line(&st, index, line) : LINE_SLOW;
        if (rc == LINE_ERROR) goto done;
        if (rc == LINE_SLOW) {
            PyObject *entry = PyObject_CallFunctionObjArgs(st.slow, index, line,
                                                           PyTuple_GET_ITEM(pick, 2), NULL);
            if (entry == NULL) goto done;
            untrack_entry(entry);
            if (entry != Py_None && PyList_Append(st.entries, entry) < 0) {
                Py_DECREF(entry);
                goto done;
            }
            Py_DECREF(entry);
        }
    }
    result = Py_BuildValue("(OOll)", st.entries, st.hits, st.timeouts, st.not_pop_imap);
done:
    in_match = 0;
    Py_XDECREF(st.entries);
    Py_XDECREF(st.hits);
    Py_XDECREF(st.last_stamp);
    Py_XDECREF(st.last_time);
    Py_XDECREF(st.last_zone);
    Py_XDECREF(st.groups_of);
    return result;
}

static PyMethodDef methods[] = {
    {"header", fastscan_header, METH_O,
     "header(line) -> (format, stamp, host, program, pid, message, rest) or None"},
    {"classify", fastscan_classify, METH_VARARGS,
     "classify(line, exact, prefixes, suffixes) -> kind | format << 2"},
    {"scan", fastscan_scan, METH_VARARGS,
     "scan(block, exact, prefixes, suffixes) -> (lines, rfc3339, rfc3164, picked)"},
    {"match_picks", fastscan_match_picks, METH_VARARGS,
     "match_picks(picks, ctx, timeout, cap) -> (entries, hits, timeouts, not_pop_imap)"},
    {"ticket", fastscan_ticket, METH_NOARGS, "ticket() -> the running match's ticket, or None"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastscan",
                                    "scan.py's pre-filter in C (see the source's comment).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__fastscan(void) {
    format_names[1] = PyUnicode_InternFromString("rfc3339");
    format_names[2] = PyUnicode_InternFromString("rfc3164");
    if (format_names[1] == NULL || format_names[2] == NULL) return NULL;
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    return PyModule_Create(&module);
}
