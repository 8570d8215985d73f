/* What the two files of sslsock._fastio (fastio.c, fastio_inbox.c) share.  Python.h and
 * sslsock_core.h first. */
#ifndef SSLSOCK_FASTIO_H
#define SSLSOCK_FASTIO_H

/* Adds the Inbox type to the module; 0, or -1 with an exception set. */
int ss_fastio_inbox_init(PyObject *module);
/* feed(events_address, start, n, channels, fed): see fastio_inbox.c. */
PyObject *ss_fastio_feed(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);

/* resume(fed, rest): see fastio_inbox.c. */
PyObject *ss_fastio_resume(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);

#endif
