/* sslsock._fastio: the per-message path of a thread that serves a channel, in the CPython
 * C API.
 *
 * Why it exists.  cffi releases and retakes the GIL around every C call, and a read through
 * the cffi binding costs several Python-level steps besides (the guard that keeps the C
 * object alive, a lock, the result buffers, the copy into bytes).  With many channel
 * threads, every microsecond a thread holds the GIL is a chance for the others, woken by
 * their sockets, to find it taken and sleep on it: the time turns into context switches.
 * Here a read is one call that takes the guard, drops the GIL once while C waits, reads,
 * decrypts and deframes, and builds the bytes object with the GIL back; a write likewise.
 *
 * What it holds.  No OpenSSL and no socket code: it calls the core (the cffi module
 * sslsock._native) through function pointers that sslsock._core.connection hands to setup() at
 * import.  It also defines Guard, the object that keeps a C object (connection, listener,
 * hub) alive while calls use it and frees it exactly once; being in C, its counters change
 * under the GIL alone, without a lock.  Its second file, fastio_inbox.c, holds sslsock.aio's
 * inboxes (feed, resume).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>

#include "sslsock_core.h"
#include "fastio.h"

/* The core's prototypes, from its header (never re-typed here). */
typedef __typeof__(&ss_conn_read_hold) read_hold_fn;
typedef __typeof__(&ss_conn_read_done) read_done_fn;
typedef __typeof__(&ss_conn_write) write_fn;
_Static_assert(__builtin_types_compatible_p(__typeof__(&ss_conn_queue_write), write_fn),
               "ss_conn_queue_write and ss_conn_write are called through one pointer type");

static read_hold_fn core_read_hold;
static read_done_fn core_read_done;
static write_fn core_write;
static write_fn core_queue_write;
static PyObject *closed_exc;  /* sslsock.SocketClosed */
static PyObject *release_fn;  /* ffi.release */

/* The last error of a fast call, per thread: the caller turns it into an exception. */
static _Thread_local ss_err last_err;

/* ---- Guard ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *ptr;      /* the cdata (ffi.gc pointer), None once freed */
    void *raw;          /* the same address, for the fast calls */
    PyObject *shutdown; /* callable(ptr): wakes calls blocked on the object */
    PyObject *what;     /* str, for "... is closed" */
    PyObject *on_free;  /* callable() or None, run once the object is freed */
    Py_ssize_t busy;    /* calls in flight (close counts as one while it runs) */
    int closing;
} Guard;

static int guard_free_now(Guard *g)
{
    PyObject *ptr = g->ptr;
    g->ptr = Py_None;
    Py_INCREF(Py_None);
    g->raw = NULL;
    int rc = 0;
    if (ptr != Py_None) {
        PyObject *r = PyObject_CallOneArg(release_fn, ptr); /* runs the C free function now */
        if (r == NULL)
            rc = -1;
        Py_XDECREF(r);
        if (rc == 0 && g->on_free != Py_None) {
            r = PyObject_CallNoArgs(g->on_free);
            if (r == NULL)
                rc = -1;
            Py_XDECREF(r);
        }
    }
    Py_DECREF(ptr);
    return rc;
}

/* Leave: the last one out after close() frees the object. */
static int guard_leave(Guard *g)
{
    g->busy--;
    if (g->closing && g->busy == 0)
        return guard_free_now(g);
    return 0;
}

static int guard_enter(Guard *g)
{
    if (g->closing) {
        PyErr_Format(closed_exc, "%U is closed", g->what);
        return -1;
    }
    g->busy++;
    return 0;
}

static int Guard_init(Guard *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ptr", "raw", "shutdown", "what", "on_free", NULL};
    PyObject *ptr, *shutdown, *what, *on_free = Py_None;
    unsigned long long raw;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKOU|O", kwlist, &ptr, &raw, &shutdown,
                                     &what, &on_free))
        return -1;
    Py_INCREF(ptr);
    Py_INCREF(shutdown);
    Py_INCREF(what);
    Py_INCREF(on_free);
    Py_XSETREF(self->ptr, ptr);
    Py_XSETREF(self->shutdown, shutdown);
    Py_XSETREF(self->what, what);
    Py_XSETREF(self->on_free, on_free);
    self->raw = (void *)(uintptr_t)raw;
    self->busy = 0;
    self->closing = 0;
    return 0;
}

static int Guard_traverse(Guard *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ptr);
    Py_VISIT(self->shutdown);
    Py_VISIT(self->what);
    Py_VISIT(self->on_free);
    return 0;
}

static int Guard_clear(Guard *self)
{
    Py_CLEAR(self->ptr);
    Py_CLEAR(self->shutdown);
    Py_CLEAR(self->what);
    Py_CLEAR(self->on_free);
    return 0;
}

static void Guard_dealloc(Guard *self)
{
    PyObject_GC_UnTrack(self);
    Guard_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Guard_enter(Guard *self, PyObject *unused)
{
    if (guard_enter(self) < 0)
        return NULL;
    Py_INCREF(self->ptr);
    return self->ptr;
}

static PyObject *Guard_leave(Guard *self, PyObject *unused)
{
    if (guard_leave(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Guard_exit(Guard *self, PyObject *args)
{
    if (guard_leave(self) < 0)
        return NULL;
    Py_RETURN_FALSE; /* an exception from the block goes on */
}

static PyObject *Guard_close(Guard *self, PyObject *unused)
{
    if (self->closing)
        Py_RETURN_NONE;
    self->closing = 1;
    /* The shutdown call uses the object too: a call leaving meanwhile must not free it
     * under our feet, so close counts as a call in flight until shutdown returns. */
    self->busy++;
    PyObject *ptr = self->ptr;
    Py_INCREF(ptr);
    PyObject *r = PyObject_CallOneArg(self->shutdown, ptr);
    Py_DECREF(ptr);
    int failed = r == NULL;
    Py_XDECREF(r);
    if (failed) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        guard_leave(self);
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    if (guard_leave(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Guard_get_closed(Guard *self, void *unused)
{
    return PyBool_FromLong(self->closing);
}

static PyObject *Guard_get_ptr(Guard *self, void *unused)
{
    Py_INCREF(self->ptr);
    return self->ptr;
}

static PyObject *Guard_take_on_free(Guard *self, PyObject *unused)
{
    PyObject *cb = self->on_free; /* the reference moves to the caller */
    Py_INCREF(Py_None);
    self->on_free = Py_None;
    return cb;
}

static PyMethodDef Guard_methods[] = {
    {"take_on_free", (PyCFunction)Guard_take_on_free, METH_NOARGS,
     "Return the on_free callable (or None) and forget it: the caller runs it now."},
    {"enter", (PyCFunction)Guard_enter, METH_NOARGS,
     "Count a call in flight and return the pointer (SocketClosed once closed)."},
    {"leave", (PyCFunction)Guard_leave, METH_NOARGS,
     "End a call; the last one out after close() frees the object."},
    {"__enter__", (PyCFunction)Guard_enter, METH_NOARGS,
     "with guard as ptr: enter() on the way in, leave() on the way out."},
    {"__exit__", (PyCFunction)Guard_exit, METH_VARARGS, "leave()"},
    {"close", (PyCFunction)Guard_close, METH_NOARGS,
     "Wake blocked calls (the shutdown function) and free the object once none is left."},
    {NULL},
};

static PyGetSetDef Guard_getset[] = {
    {"closed", (getter)Guard_get_closed, NULL, "close() was called", NULL},
    {"ptr", (getter)Guard_get_ptr, NULL, "the pointer (None once freed)", NULL},
    {NULL},
};

static PyTypeObject GuardType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sslsock._fastio.Guard",
    .tp_doc = "Keeps a C object alive while calls use it, and frees it exactly once.",
    .tp_basicsize = sizeof(Guard),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Guard_init,
    .tp_traverse = (traverseproc)Guard_traverse,
    .tp_clear = (inquiry)Guard_clear,
    .tp_dealloc = (destructor)Guard_dealloc,
    .tp_methods = Guard_methods,
    .tp_getset = Guard_getset,
};

/* ---- the fast calls ------------------------------------------------------------------- */

static int as_int(PyObject *o, int *v)
{
    long x = PyLong_AsLong(o);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (x < INT_MIN || x > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "time-out out of range");
        return -1;
    }
    *v = (int)x;
    return 0;
}

static int as_guard(PyObject *o, Guard **g)
{
    if (!PyObject_TypeCheck(o, &GuardType)) {
        PyErr_SetString(PyExc_TypeError, "expected a sslsock._fastio.Guard");
        return -1;
    }
    *g = (Guard *)o;
    return 0;
}

/* read(guard, timeout_ms, max_bytes) -> bytes, or the SS_E_* code (an int) of a failure
 * whose record error_address() points to. */
static PyObject *fast_read(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Guard *g;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "read(guard, timeout_ms, max_bytes)");
        return NULL;
    }
    if (as_guard(args[0], &g) < 0)
        return NULL;
    int timeout_ms;
    if (as_int(args[1], &timeout_ms) < 0)
        return NULL;
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[2]);
    if (max_bytes == -1 && PyErr_Occurred())
        return NULL;
    if (max_bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "max_bytes must be positive");
        return NULL;
    }
    if (guard_enter(g) < 0)
        return NULL;
    ss_conn *c = g->raw;
    const char *out;
    size_t out_len;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = core_read_hold(c, timeout_ms, (size_t)max_bytes, &out, &out_len, &last_err);
    Py_END_ALLOW_THREADS
    PyObject *result;
    if (rc == 0) {
        /* the read lock is held: no other reader can touch the bytes under *out */
        result = PyBytes_FromStringAndSize(out, (Py_ssize_t)out_len);
        core_read_done(c, out_len);
    } else {
        result = PyLong_FromLong(rc);
    }
    if (guard_leave(g) < 0)
        Py_CLEAR(result);
    return result;
}

/* write(guard, data: bytes, timeout_ms, queued) -> None, or the SS_E_* code of a failure.
 * queued: the channel is served by a hub (ss_conn_queue_write). */
static PyObject *fast_write(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Guard *g;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "write(guard, data, timeout_ms, queued)");
        return NULL;
    }
    if (as_guard(args[0], &g) < 0)
        return NULL;
    if (!PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "write() takes bytes");
        return NULL;
    }
    int timeout_ms;
    if (as_int(args[2], &timeout_ms) < 0)
        return NULL;
    write_fn fn = PyObject_IsTrue(args[3]) ? core_queue_write : core_write;
    if (guard_enter(g) < 0)
        return NULL;
    ss_conn *c = g->raw;
    /* the caller's reference keeps the bytes alive while the GIL is released */
    const char *data = PyBytes_AS_STRING(args[1]);
    size_t len = (size_t)PyBytes_GET_SIZE(args[1]);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fn(c, data, len, timeout_ms, &last_err);
    Py_END_ALLOW_THREADS
    PyObject *result;
    if (rc == 0) {
        result = Py_None;
        Py_INCREF(result);
    } else {
        result = PyLong_FromLong(rc);
    }
    if (guard_leave(g) < 0)
        Py_CLEAR(result);
    return result;
}

static PyObject *error_address(PyObject *mod, PyObject *unused)
{
    return PyLong_FromVoidPtr(&last_err);
}

/* setup(read_hold, read_done, write, queue_write, SocketClosed, ffi.release): the core's
 * functions (as addresses) and what the guard needs. */
static PyObject *setup(PyObject *mod, PyObject *args)
{
    unsigned long long rh, rd, w, qw;
    PyObject *exc, *rel;
    if (!PyArg_ParseTuple(args, "KKKKOO", &rh, &rd, &w, &qw, &exc, &rel))
        return NULL;
    if (!rh || !rd || !w || !qw) {
        PyErr_SetString(PyExc_ValueError, "setup() needs the core's four function addresses");
        return NULL;
    }
    core_read_hold = (read_hold_fn)(uintptr_t)rh;
    core_read_done = (read_done_fn)(uintptr_t)rd;
    core_write = (write_fn)(uintptr_t)w;
    core_queue_write = (write_fn)(uintptr_t)qw;
    Py_INCREF(exc);
    Py_INCREF(rel);
    Py_XSETREF(closed_exc, exc);
    Py_XSETREF(release_fn, rel);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"read", (PyCFunction)(void (*)(void))fast_read, METH_FASTCALL,
     "read(guard, timeout_ms, max_bytes) -> bytes, or an SS_E_* code"},
    {"write", (PyCFunction)(void (*)(void))fast_write, METH_FASTCALL,
     "write(guard, data, timeout_ms, queued) -> None, or an SS_E_* code"},
    {"feed", (PyCFunction)(void (*)(void))ss_fastio_feed, METH_FASTCALL,
     "feed(events_address, start, n, channels, fed) -> index of the first non-message"},
    {"resume", (PyCFunction)(void (*)(void))ss_fastio_resume, METH_FASTCALL,
     "resume(fed, rest): hand waiting async-for readers their next message"},
    {"error_address", error_address, METH_NOARGS,
     "address of this thread's record of the last failed fast call (an ss_err)"},
    {"setup", setup, METH_VARARGS, "wire the module to the core (sslsock._core.connection does it)"},
    {NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "sslsock._fastio",
    "The per-message path of channel threads, and the C objects' guard.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__fastio(void)
{
    if (PyType_Ready(&GuardType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "ABI_VERSION", SS_ABI_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&GuardType);
    if (PyModule_AddObject(m, "Guard", (PyObject *)&GuardType) < 0) {
        Py_DECREF(&GuardType);
        Py_DECREF(m);
        return NULL;
    }
    if (ss_fastio_inbox_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
