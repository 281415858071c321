/* The message layer: every header of docs/PROTOCOL.md as a typed C struct, listed once in the
 * tables below, with one table-driven encoder and one total decoder. Nothing else in the tree
 * packs a header map or reads one by key; map and tuple sizes come from the tables.
 *
 * Lifetimes: a decoded message borrows from the msgpack object it was decoded from (strings,
 * bins and lists point into it): for a frame, until on_frame returns. Encoding never allocates
 * beyond the output sbuffer; lists are read from an array or produced element by element by a
 * callback (the hot compute and done messages use that, so no intermediate tree is built).
 *
 * Totality: any bytes give a decoded message or an error. For a LIST that is settled when the
 * message is decoded; for a LAZY list (the hot per-task lists) the decoder checks only that it
 * is an array, and each element is checked when it is read: tsr__list_get can then fail, and
 * the reader treats that exactly as a decode error of the whole message. */
#ifndef TSR_WIRE_MSG_H
#define TSR_WIRE_MSG_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

/* ---- Field kinds ---------------------------------------------------------------------------- */

/* A string or bin borrowed from a frame (not NUL-terminated) or, for encoding, from the caller. */
typedef struct tsr__str {
    const char *p;
    uint32_t n;
} tsr__str;

struct tsr__schema;

/* A list. Encoding: n elements, read from v (an array of the element struct) or, when v is
 * NULL, filled one at a time by gen (the element is zeroed first; gen is called for i = 0, 1,
 * ..., n - 1 in order, and each element, nested lists included, is encoded before the next is
 * asked for, so a generator may keep a cursor in ctx). Decoding: n and obj are set; a LIST's
 * elements have all been checked, a LAZY list's are checked one by one as tsr__list_get decodes
 * them. */
typedef struct tsr__list {
    uint32_t n;
    const void *v;
    void (*gen)(void *ctx, uint32_t i, void *elem);
    void *ctx;
    const msgpack_object *obj;
} tsr__list;

/* Kinds: U32 (non-negative, at most UINT32_MAX), U64 (non-negative), I64, F64 (any number),
 * DTYPE (a tsr_dtype: an integer, or its name on input), BOOL, STR, BIN, REC (a nested record,
 * embedded), LIST (of records), LAZY (a list of records whose elements are checked when read,
 * not when the message is decoded), KV (a map of string to U64, as a list of tsr__kv).
 *
 * LAZY is for the lists on the per-task path (compute's tasks and their inputs, done's items,
 * free's keys): decoding every element to check it and again to use it cost the scheduler and
 * workers about 5% of their time on tiny tasks. Its readers must check every tsr__list_get and
 * refuse the message on failure; a reader that acts element by element and must not act on
 * half a message reads (and so checks) all of it first, as the worker's compute does. */
#define TSR__CT_U32(sub) uint32_t
#define TSR__CT_U64(sub) uint64_t
#define TSR__CT_I64(sub) int64_t
#define TSR__CT_DTYPE(sub) int64_t
#define TSR__CT_F64(sub) double
#define TSR__CT_BOOL(sub) int
#define TSR__CT_STR(sub) tsr__str
#define TSR__CT_BIN(sub) tsr__str
#define TSR__CT_REC(sub) tsr__m_##sub
#define TSR__CT_LIST(sub) tsr__list
#define TSR__CT_LAZY(sub) tsr__list
#define TSR__CT_KV(sub) tsr__list

/* ---- The tables ------------------------------------------------------------------------------ */

/* Records are maps (MAP: keyed by name), tuples (TUP: by position; absent optional fields are
 * nil, trailing absent ones are left out) or bare values (BARE: the record's one field alone,
 * for lists of strings or numbers). A row is F(X, kind, name, REQ|OPT|NIL, sub): name is both the
 * struct member and the map key (less a trailing underscore, for C keywords: inline_). OPT
 * fields are left out when absent; NIL ones are optional too but written as nil in a tuple
 * (`addr|nil`). X is
 * passed through to F (the codec uses it for the struct type). To add a message: a row in
 * TSR__MSG_MAP, a field table TSR__R_<name>, and its lines in docs/PROTOCOL.md (test_msg checks
 * them). */
#define TSR__RECORD_MAP(XX)                                                                        \
    XX(kv, BARE)                                                                                   \
    XX(str_item, BARE)                                                                             \
    XX(i64_item, BARE)                                                                             \
    XX(id_item, BARE)                                                                              \
    XX(key, TUP)                                                                                   \
    XX(output, TUP)                                                                                \
    XX(op_stat, MAP)                                                                               \
    XX(worker_stat, MAP)                                                                           \
    XX(job_stats, MAP)                                                                             \
    XX(trace_task, TUP)                                                                            \
    XX(transfer, TUP)                                                                              \
    XX(job_trace, MAP)                                                                             \
    XX(input, TUP)                                                                                 \
    XX(task, TUP)                                                                                  \
    XX(done_item, TUP)                                                                             \
    XX(wstats, MAP)                                                                                \
    XX(winfo, MAP)                                                                                 \
    XX(op_info, MAP)                                                                               \
    XX(jinfo, MAP)                                                                                 \
    XX(event, TUP)

/* Message types: C name, then the "t" string. */
#define TSR__MSG_MAP(XX)                                                                           \
    XX(challenge)                                                                                  \
    XX(hello)                                                                                      \
    XX(welcome)                                                                                    \
    XX(error)                                                                                      \
    XX(submit)                                                                                     \
    XX(accepted)                                                                                   \
    XX(rejected)                                                                                   \
    XX(progress)                                                                                   \
    XX(finished)                                                                                   \
    XX(failed)                                                                                     \
    XX(release)                                                                                    \
    XX(wait_workers)                                                                               \
    XX(workers)                                                                                    \
    XX(shutdown)                                                                                   \
    XX(compute)                                                                                    \
    XX(done)                                                                                       \
    XX(erred)                                                                                      \
    XX(free)                                                                                       \
    XX(get)                                                                                        \
    XX(chunk)                                                                                      \
    XX(missing)                                                                                    \
    XX(info)                                                                                       \
    XX(heartbeat)                                                                                  \
    XX(computed)                                                                                   \
    XX(release_keys)                                                                               \
    XX(peer_lost)                                                                                  \
    XX(retire)                                                                                     \
    XX(replicate)                                                                                  \
    XX(replicated)

/* Element records. A kv is one entry of a KV map; its key is the name, not a field key. */
#define TSR__R_kv(F, X) F(X, STR, k, REQ, _) F(X, U64, v, REQ, _)
#define TSR__R_str_item(F, X) F(X, STR, s, REQ, _)
#define TSR__R_i64_item(F, X) F(X, I64, v, REQ, _)
#define TSR__R_id_item(F, X) F(X, U32, id, REQ, _)
#define TSR__R_key(F, X) F(X, U32, job, REQ, _) F(X, U32, id, REQ, _)
#define TSR__R_output(F, X) F(X, U32, id, REQ, _) F(X, STR, addr, NIL, _) F(X, U64, nbytes, REQ, _)
#define TSR__R_op_stat(F, X)                                                                       \
    F(X, STR, op, REQ, _)                                                                          \
    F(X, U64, tasks, REQ, _)                                                                       \
    F(X, U64, inline_, REQ, _)                                                                     \
    F(X, F64, seconds, REQ, _)                                                                     \
    F(X, F64, flops, REQ, _)                                                                       \
    F(X, U64, moved_bytes, REQ, _)
#define TSR__R_worker_stat(F, X)                                                                   \
    F(X, STR, name, REQ, _)                                                                        \
    F(X, STR, addr, REQ, _)                                                                        \
    F(X, U64, threads, OPT, _)                                                                     \
    F(X, U64, tasks, REQ, _)                                                                       \
    F(X, U64, rss_peak, REQ, _)                                                                    \
    F(X, U64, rss, REQ, _)                                                                         \
    F(X, U64, chunk_peak, REQ, _)                                                                  \
    F(X, F64, busy_s, REQ, _)                                                                      \
    F(X, U64, in_bytes, REQ, _)                                                                    \
    F(X, F64, in_s, REQ, _)                                                                        \
    F(X, U64, out_bytes, REQ, _)                                                                   \
    F(X, U64, h2d_bytes, OPT, _)                                                                   \
    F(X, U64, d2h_bytes, OPT, _)                                                                   \
    F(X, U64, dev_evicted, OPT, _)                                                                 \
    F(X, U64, spilled_bytes, OPT, _)                                                               \
    F(X, U64, unspilled_bytes, OPT, _)                                                             \
    F(X, U64, disk_bytes, OPT, _)                                                                  \
    F(X, BOOL, paused, OPT, _)                                                                     \
    F(X, F64, spill_s, OPT, _)                                                                     \
    F(X, F64, unspill_s, OPT, _)
#define TSR__R_job_stats(F, X)                                                                     \
    F(X, U64, tasks, REQ, _)                                                                       \
    F(X, U64, sources_inline, REQ, _)                                                              \
    F(X, U64, moved_bytes, REQ, _)                                                                 \
    F(X, U64, sched_rss_base, REQ, _)                                                              \
    F(X, U64, sched_rss_peak, REQ, _)                                                              \
    F(X, LIST, ops, REQ, op_stat)                                                                  \
    F(X, LIST, workers, REQ, worker_stat)                                                          \
    F(X, U64, retire_moved, OPT, _)
#define TSR__R_trace_task(F, X)                                                                    \
    F(X, U32, worker, REQ, _)                                                                      \
    F(X, U32, id, REQ, _)                                                                          \
    F(X, U32, op, REQ, _)                                                                          \
    F(X, F64, start, REQ, _)                                                                       \
    F(X, F64, seconds, REQ, _)                                                                     \
    F(X, U32, thread, REQ, _)
/* A peer fetch: in done's tr [job, id, ...] and in finished's transfers [worker, id, ...]. */
#define TSR__R_transfer(F, X)                                                                      \
    F(X, U32, job, REQ, _)                                                                         \
    F(X, U32, id, REQ, _)                                                                          \
    F(X, U64, nbytes, REQ, _)                                                                      \
    F(X, F64, start, REQ, _)                                                                       \
    F(X, F64, end, REQ, _)                                                                         \
    F(X, STR, from, REQ, _)
#define TSR__R_job_trace(F, X)                                                                     \
    F(X, LIST, workers, REQ, str_item)                                                             \
    F(X, LIST, ops, REQ, str_item)                                                                 \
    F(X, LIST, tasks, REQ, trace_task)                                                             \
    F(X, LIST, transfers, REQ, transfer)                                                           \
    F(X, U64, dropped, REQ, _)
/* A compute task's input: [id, addr|nil, flags?, kdesc?, uses?] (PROTOCOL.md). */
#define TSR__R_input(F, X)                                                                         \
    F(X, U32, id, REQ, _)                                                                          \
    F(X, STR, addr, NIL, _)                                                                        \
    F(X, U64, flags, OPT, _)                                                                       \
    F(X, BIN, kdesc, OPT, _)                                                                       \
    F(X, U32, uses, OPT, _)
#define TSR__R_task(F, X)                                                                          \
    F(X, U32, id, REQ, _) F(X, BIN, kdesc, REQ, _) F(X, LAZY, inputs, REQ, input)
#define TSR__R_done_item(F, X)                                                                     \
    F(X, U32, job, REQ, _)                                                                         \
    F(X, U32, id, REQ, _)                                                                          \
    F(X, U64, nbytes, REQ, _)                                                                      \
    F(X, F64, seconds, OPT, _)                                                                     \
    F(X, F64, start, OPT, _)                                                                       \
    F(X, U32, thread, OPT, _)
#define TSR__R_wstats(F, X)                                                                        \
    F(X, U64, rss_peak, OPT, _)                                                                    \
    F(X, U64, rss, OPT, _)                                                                         \
    F(X, U64, chunk_bytes, OPT, _)                                                                 \
    F(X, U64, chunk_peak, OPT, _)                                                                  \
    F(X, F64, busy_s, OPT, _)                                                                      \
    F(X, U64, tasks, OPT, _)                                                                       \
    F(X, U64, in_bytes, OPT, _)                                                                    \
    F(X, F64, in_s, OPT, _)                                                                        \
    F(X, U64, out_bytes, OPT, _)                                                                   \
    F(X, U64, dev_used, OPT, _)                                                                    \
    F(X, U64, dev_limit, OPT, _)                                                                   \
    F(X, U64, h2d_bytes, OPT, _)                                                                   \
    F(X, U64, d2h_bytes, OPT, _)                                                                   \
    F(X, U64, dev_evicted, OPT, _)                                                                 \
    F(X, U64, spilled_bytes, OPT, _)                                                               \
    F(X, U64, unspilled_bytes, OPT, _)                                                             \
    F(X, U64, disk_bytes, OPT, _)                                                                  \
    F(X, BOOL, paused, OPT, _)                                                                     \
    F(X, F64, spill_s, OPT, _)                                                                     \
    F(X, F64, unspill_s, OPT, _)
#define TSR__R_winfo(F, X)                                                                         \
    F(X, STR, name, REQ, _)                                                                        \
    F(X, STR, addr, REQ, _)                                                                        \
    F(X, STR, kind, REQ, _)                                                                        \
    F(X, STR, cpus, REQ, _)                                                                        \
    F(X, U64, threads, REQ, _)                                                                     \
    F(X, U64, running, REQ, _)                                                                     \
    F(X, U64, queued, REQ, _)                                                                      \
    F(X, U64, tasks, REQ, _)                                                                       \
    F(X, U64, rss, REQ, _)                                                                         \
    F(X, U64, mem_limit, REQ, _)                                                                   \
    F(X, U64, chunk_bytes, REQ, _)                                                                 \
    F(X, U64, in_bytes, REQ, _)                                                                    \
    F(X, U64, out_bytes, REQ, _)                                                                   \
    F(X, F64, busy_s, REQ, _)                                                                      \
    F(X, F64, speed, REQ, _)                                                                       \
    F(X, STR, dev_name, OPT, _)                                                                    \
    F(X, U64, dev_used, OPT, _)                                                                    \
    F(X, U64, dev_limit, OPT, _)                                                                   \
    F(X, U64, h2d_bytes, OPT, _)                                                                   \
    F(X, U64, d2h_bytes, OPT, _)                                                                   \
    F(X, U64, dev_evicted, OPT, _)                                                                 \
    F(X, U64, spilled_bytes, OPT, _)                                                               \
    F(X, U64, unspilled_bytes, OPT, _)                                                             \
    F(X, U64, disk_bytes, OPT, _)                                                                  \
    F(X, BOOL, paused, OPT, _)
#define TSR__R_op_info(F, X)                                                                       \
    F(X, STR, op, REQ, _)                                                                          \
    F(X, U64, total, REQ, _)                                                                       \
    F(X, U64, ready, REQ, _)                                                                       \
    F(X, U64, done, REQ, _)                                                                        \
    F(X, U64, running, REQ, _)                                                                     \
    F(X, U64, erred, REQ, _)                                                                       \
    F(X, F64, flops_done, REQ, _)
#define TSR__R_jinfo(F, X)                                                                         \
    F(X, U64, job, REQ, _)                                                                         \
    F(X, U64, total, REQ, _)                                                                       \
    F(X, U64, done, REQ, _)                                                                        \
    F(X, U64, erred, REQ, _)                                                                       \
    F(X, U64, moved_bytes, REQ, _)                                                                 \
    F(X, LIST, ops, REQ, op_info)
#define TSR__R_event(F, X) F(X, F64, t, REQ, _) F(X, STR, msg, REQ, _)

/* Messages. hello's worker fields are optional in the table; the scheduler requires them of a
 * worker (dev_ fields: a GPU worker's device, optional even then). info is both the monitor's
 * request (no fields) and the reply (all of them). The dev_/h2d/d2h fields of wstats, winfo and
 * worker_stat are a GPU worker's device cache, and spilled_bytes, unspilled_bytes, disk_bytes and
 * paused its disk tier (a worker with a memory limit): optional, so older peers decode without
 * them. */
#define TSR__R_hello(F, X)                                                                         \
    F(X, I64, v, REQ, _)                                                                           \
    F(X, STR, role, REQ, _)                                                                        \
    F(X, STR, name, OPT, _)                                                                        \
    F(X, BIN, cnonce, OPT, _)                                                                      \
    F(X, BIN, mac, OPT, _)                                                                         \
    F(X, I64, threads, OPT, _)                                                                     \
    F(X, STR, kind, OPT, _)                                                                        \
    F(X, STR, addr, OPT, _)                                                                        \
    F(X, STR, cpus, OPT, _)                                                                        \
    F(X, I64, mem, OPT, _)                                                                         \
    F(X, I64, pid, OPT, _)                                                                         \
    F(X, STR, dev_name, OPT, _)                                                                    \
    F(X, U64, dev_limit, OPT, _)                                                                   \
    F(X, LIST, plugins, OPT, str_item)
/* challenge opens every connection (server to client, wire/auth.c); hello's cnonce and mac and
 * welcome's mac answer it when the cluster has a secret; welcome's ckey (a worker's only) is the
 * key of the per-job capabilities, accepted's cap the capability of the job, get's cap the
 * capability presented to a worker's peer port (docs/security.md). */
#define TSR__R_challenge(F, X) F(X, I64, v, REQ, _) F(X, BIN, nonce, REQ, _)
#define TSR__R_welcome(F, X)                                                                       \
    F(X, I64, v, REQ, _) F(X, U64, id, REQ, _) F(X, BIN, mac, OPT, _) F(X, BIN, ckey, OPT, _)
#define TSR__R_error(F, X) F(X, STR, msg, REQ, _)
/* stream: the first `stream` entries of the graph's outputs are written by the client as they
 * are computed (PROTOCOL.md "Streamed outputs"); accepted's stream says the scheduler will
 * report them with `computed` and takes `release_keys`. */
#define TSR__R_submit(F, X) F(X, U64, n, OPT, _) F(X, BOOL, trace, OPT, _) F(X, U32, stream, OPT, _)
#define TSR__R_accepted(F, X)                                                                      \
    F(X, U32, job, REQ, _)                                                                         \
    F(X, U32, tasks, REQ, _) F(X, BOOL, stream, OPT, _) F(X, BIN, cap, OPT, _)
#define TSR__R_rejected(F, X) F(X, STR, msg, REQ, _)
#define TSR__R_progress(F, X)                                                                      \
    F(X, U32, job, REQ, _) F(X, U32, done, REQ, _) F(X, U32, total, REQ, _) F(X, U32, erred, REQ, _)
#define TSR__R_finished(F, X)                                                                      \
    F(X, U32, job, REQ, _)                                                                         \
    F(X, LIST, outputs, REQ, output)                                                               \
    F(X, REC, stats, OPT, job_stats)                                                               \
    F(X, REC, trace, OPT, job_trace)
#define TSR__R_failed(F, X)                                                                        \
    F(X, U32, job, REQ, _) F(X, U32, id, REQ, _) F(X, U32, array, REQ, _) F(X, STR, msg, REQ, _)
#define TSR__R_release(F, X) F(X, U32, job, REQ, _)
/* Streamed outputs: output chunks of a streaming job now in memory, where to fetch them; and
 * the client's release of chunks it has written. */
#define TSR__R_computed(F, X) F(X, U32, job, REQ, _) F(X, LIST, outputs, REQ, output)
#define TSR__R_release_keys(F, X) F(X, U32, job, REQ, _) F(X, LIST, ids, REQ, id_item)
/* "count", never "n": every header's "n" is its payload length (wire.h). */
#define TSR__R_wait_workers(F, X) F(X, U64, count, REQ, _)
#define TSR__R_workers(F, X) F(X, U64, count, REQ, _)
#define TSR__R_shutdown(F, X)
/* S→W: the worker at addr (a peer address) is lost: fetches waiting on it fail now (it may be
 * stopped, and would answer nothing until the fetch timeout). */
#define TSR__R_peer_lost(F, X) F(X, STR, addr, REQ, _)
/* Graceful retirement (PROTOCOL.md): W→S retire, the worker wants to leave; S→W replicate, fetch
 * (job, id) from the peer at addr and keep it; W→S replicated, it now holds that chunk. The
 * scheduler ends a retirement with shutdown. */
#define TSR__R_retire(F, X)
#define TSR__R_replicate(F, X) F(X, U32, job, REQ, _) F(X, U32, id, REQ, _) F(X, STR, addr, REQ, _)
#define TSR__R_replicated(F, X)                                                                    \
    F(X, U32, job, REQ, _) F(X, U32, id, REQ, _) F(X, U64, nbytes, REQ, _) F(X, STR, msg, OPT, _)
/* Liveness: sent every heartbeat interval each way between scheduler and worker, and from the
 * scheduler to clients and monitors. Carries nothing; any frame counts as a sign of life. */
#define TSR__R_heartbeat(F, X)
#define TSR__R_compute(F, X)                                                                       \
    F(X, U32, job, REQ, _) F(X, BOOL, trace, OPT, _) F(X, LAZY, tasks, REQ, task)
#define TSR__R_done(F, X)                                                                          \
    F(X, LAZY, items, REQ, done_item) F(X, LIST, tr, OPT, transfer) F(X, REC, st, OPT, wstats)
#define TSR__R_erred(F, X)                                                                         \
    F(X, U32, job, REQ, _) F(X, U32, id, REQ, _) F(X, STR, msg, OPT, _) F(X, BOOL, kept, OPT, _)
#define TSR__R_free(F, X) F(X, LAZY, keys, REQ, key)
#define TSR__R_get(F, X) F(X, U32, job, REQ, _) F(X, U32, id, REQ, _) F(X, BIN, cap, OPT, _)
#define TSR__R_chunk(F, X)                                                                         \
    F(X, U32, job, REQ, _)                                                                         \
    F(X, U32, id, REQ, _)                                                                          \
    F(X, DTYPE, dtype, REQ, _)                                                                     \
    F(X, LIST, shape, REQ, i64_item)                                                               \
    F(X, U64, n, REQ, _)
#define TSR__R_missing(F, X) F(X, U32, job, REQ, _) F(X, U32, id, REQ, _)
#define TSR__R_info(F, X)                                                                          \
    F(X, STR, addr, OPT, _)                                                                        \
    F(X, F64, uptime, OPT, _)                                                                      \
    F(X, U64, workers, OPT, _)                                                                     \
    F(X, U64, jobs, OPT, _)                                                                        \
    F(X, U64, done_total, OPT, _)                                                                  \
    F(X, KV, tasks, OPT, kv)                                                                       \
    F(X, LIST, wlist, OPT, winfo)                                                                  \
    F(X, LIST, jlist, OPT, jinfo)                                                                  \
    F(X, LIST, events, OPT, event)

/* ---- Generated types ------------------------------------------------------------------------- */

/* Each record and message: `has` (bit i set = row i present; set by the decoder for every
 * field it found, and by the caller for the OPT fields it fills before encoding: REQ fields are
 * always encoded), then one member per row. TSR__M_HAS/TSR__M_SET (records) and
 * TSR__MSG_HAS/TSR__MSG_SET (messages) name the bit by record and member. */
#define TSR__MEMBER(X, kind, name, req, sub) TSR__CT_##kind(sub) name;
/* Field numbers, tsr__m_<rec>_fidx_<field> and tsr__msg_<name>_fidx_<field>: compile-time
 * constants, so presence tests and sets cost one mask. */
#define TSR__FIDX(X, kind, name, req, sub) X##_fidx_##name,
#define TSR__DECL_REC(rec, shape)                                                                  \
    enum { TSR__R_##rec(TSR__FIDX, tsr__m_##rec) tsr__m_##rec##_nfields };                         \
    typedef struct tsr__m_##rec {                                                                  \
        uint64_t has;                                                                              \
        TSR__R_##rec(TSR__MEMBER, _)                                                               \
    } tsr__m_##rec;
TSR__RECORD_MAP(TSR__DECL_REC)
#undef TSR__DECL_REC

#define TSR__DECL_MSG(name)                                                                        \
    enum { TSR__R_##name(TSR__FIDX, tsr__msg_##name) tsr__msg_##name##_nfields };                  \
    typedef struct tsr__msg_##name {                                                               \
        uint64_t has;                                                                              \
        TSR__R_##name(TSR__MEMBER, _)                                                              \
    } tsr__msg_##name;
TSR__MSG_MAP(TSR__DECL_MSG)
#undef TSR__DECL_MSG

typedef enum tsr__msg_type {
    TSR__MSG_NONE = 0,
#define TSR__MSG_ENUM(name) TSR__MSG_##name,
    TSR__MSG_MAP(TSR__MSG_ENUM)
#undef TSR__MSG_ENUM
        TSR__MSG_COUNT
} tsr__msg_type;

/* A decoded message: type and the struct of that type. */
typedef struct tsr__msg {
    tsr__msg_type type;
    union {
#define TSR__MSG_UNION(name) tsr__msg_##name name;
        TSR__MSG_MAP(TSR__MSG_UNION)
#undef TSR__MSG_UNION
    } u;
} tsr__msg;

/* ---- Schemas (the tables as data, for the codec and the PROTOCOL.md test) -------------------- */

enum {
    TSR__K_U32,
    TSR__K_U64,
    TSR__K_I64,
    TSR__K_F64,
    TSR__K_BOOL,
    TSR__K_STR,
    TSR__K_BIN,
    TSR__K_REC,
    TSR__K_LIST,
    TSR__K_KV,
    TSR__K_DTYPE,
    TSR__K_LAZY
};
enum { TSR__SH_MAP, TSR__SH_TUP, TSR__SH_BARE };

typedef struct tsr__field {
    const char *key; /* the member's name; on the wire less a trailing underscore */
    uint8_t kind, req;
    size_t off;
    const struct tsr__schema *sub; /* REC, LIST, KV */
} tsr__field;

typedef struct tsr__schema {
    const char *name; /* the record's name, or the message's "t" */
    uint8_t shape;
    uint8_t nf;
    size_t size;
    const tsr__field *f;
} tsr__schema;

#define TSR__DECL_RSCHEMA(rec, shape) extern const tsr__schema tsr__schema_##rec;
TSR__RECORD_MAP(TSR__DECL_RSCHEMA)
#undef TSR__DECL_RSCHEMA
#define TSR__DECL_MSCHEMA(name) extern const tsr__schema tsr__schema_msg_##name;
TSR__MSG_MAP(TSR__DECL_MSCHEMA)
#undef TSR__DECL_MSCHEMA
/* Message schemas by type (index TSR__MSG_NONE is NULL). */
extern const tsr__schema *const tsr__msg_schemas[TSR__MSG_COUNT];

/* The presence bit of field f of a record or message. */
#define TSR__M_BIT(rec, f) ((uint64_t)1 << tsr__m_##rec##_fidx_##f)
#define TSR__MSG_BIT(name, f) ((uint64_t)1 << tsr__msg_##name##_fidx_##f)
#define TSR__M_HAS(rec, m, f) (((m)->has & TSR__M_BIT(rec, f)) != 0)
#define TSR__M_SET(rec, m, f) ((m)->has |= TSR__M_BIT(rec, f))
#define TSR__MSG_HAS(name, m, f) (((m)->has & TSR__MSG_BIT(name, f)) != 0)
#define TSR__MSG_SET(name, m, f) ((m)->has |= TSR__MSG_BIT(name, f))

/* ---- API ------------------------------------------------------------------------------------- */

/* Encodes a message of type `type` (m points to its tsr__msg_<type>) into b, appended: the
 * header map with "t" first. Only our own invariants are asserted (a NULL list with n > 0). */
void tsr__msg_pack(msgpack_sbuffer *b, tsr__msg_type type, const void *m);

/* Typed encoders: tsr__msg_pack_hello(b, &hello) and so on. */
#define TSR__MSG_PACKFN(name)                                                                      \
    static inline void tsr__msg_pack_##name(msgpack_sbuffer *b, const tsr__msg_##name *m) {        \
        tsr__msg_pack(b, TSR__MSG_##name, m);                                                      \
    }
TSR__MSG_MAP(TSR__MSG_PACKFN)
#undef TSR__MSG_PACKFN

/* Decodes a header map. 0, or TSR_EPROTOCOL with a reason in err (a type unknown, a required
 * field missing, a field of the wrong type or out of range). Unknown keys are ignored and so
 * are tuple elements past the table's, so peers may add fields. Total: never crashes or asserts
 * on any input. A LAZY list's elements are not checked here but by tsr__list_get. The message
 * borrows from hdr. */
int tsr__msg_decode(const msgpack_object *hdr, tsr__msg *m, char *err, size_t errlen);

/* The same, except that an OPT field of the message itself (not of a nested record) that does
 * not decode counts as absent instead of failing the message: its presence bit goes into
 * *dropped (err then names the last such field). For informational fields whose loss should not
 * cost the message, as the client treats finished's stats and trace. */
int tsr__msg_decode_soft(const msgpack_object *hdr, tsr__msg *m, uint64_t *dropped, char *err,
                         size_t errlen);

/* The same from bytes (one msgpack map, nothing after it): unpacks into zone, which the
 * message then borrows from. For tests and fuzzing; frames arrive already unpacked. */
int tsr__msg_decode_bytes(const void *data, size_t len, msgpack_zone *zone, tsr__msg *m, char *err,
                          size_t errlen);

/* The type a header names, without decoding the rest (TSR__MSG_NONE when unknown): for
 * choosing where a payload goes before the frame is complete. */
tsr__msg_type tsr__msg_peek_type(const msgpack_object *hdr);

/* A hello's "v", read before anything else of it (a peer of another version may have changed
 * everything but this). 0 or TSR_EPROTOCOL. */
int tsr__msg_hello_version(const msgpack_object *hdr, int64_t *v);

/* Element i (< l->n) of a decoded list into *elem (the element record of the list's row): 0,
 * or TSR_EPROTOCOL when the element of a LAZY list does not decode (*elem is then zeroed, and
 * the reader refuses the message as if tsr__msg_decode had). Elements of a LIST, of a KV, or of
 * a list being encoded were checked before: for them it always returns 0. */
int tsr__list_get(const tsr__list *l, const tsr__schema *elem_schema, uint32_t i, void *elem);
#define TSR__LIST_GET(l, rec, i, elem) tsr__list_get((l), &tsr__schema_##rec, (i), (elem))

/* The name of a type ("hello"), "?" out of range; and the type of a name (TSR__MSG_NONE). */
const char *tsr__msg_name(tsr__msg_type t);
tsr__msg_type tsr__msg_type_of(const char *name, size_t len);

/* Strings: a C string borrowed as a tsr__str; equality; a copy into a NUL-terminated buffer
 * (TSR_EPROTOCOL when it does not fit, and then dst holds the cut prefix). */
tsr__str tsr__str_of(const char *s);
int tsr__str_eq(tsr__str s, const char *c);
int tsr__str_copy(char *dst, size_t size, tsr__str s);

#endif
