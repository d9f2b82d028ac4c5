/* Artifacts between machines. Every output a task writes is recorded by the coordinator with
 * its SHA-256; a daemon whose store is not the coordinator's (no shared filesystem) fetches a
 * missing input from a daemon that holds it, over ZeroMQ with the same CURVE keys, in chunks
 * under credit-based flow control, checks the hash, writes a temporary name and renames it.
 *
 * Stores: the coordinator writes a sentinel file (FC_STORE_SENTINEL, a random id) into its
 * store; a daemon reads the sentinel of its own store at start. Same id: the store is shared
 * and nothing is ever copied. Different or none: the store is separate; paths under the
 * coordinator's store are then mapped onto the daemon's (the same path on real machines, a
 * different directory when two "machines" share one host).
 *
 * Wire protocol of the artifact socket (ROUTER on the holder, DEALER on the fetcher), frames:
 *   request  "FCA1" | sha256 (64 hex) | path (the coordinator's) | offset (u64 LE) | length (u32 LE)
 *   reply    "FCA1" | status ("ok" or an error text) | offset (u64 LE) | data
 * A holder serves a file only below its store and only when its content has that SHA-256, so a
 * peer learns nothing it did not already know. */
#ifndef FC_ARTIFACT_H
#define FC_ARTIFACT_H

#include <stddef.h>
#include <stdint.h>

#include "fc_msg.h"
#include "fc_net.h"
#include "fc_util.h"

#define FC_STORE_SENTINEL ".fusechat-store"
#define FC_ARTIFACT_CHUNK (1u << 20) /* bytes per chunk */
#define FC_ARTIFACT_CREDIT 8         /* chunks in flight per download */
#define FC_ARTIFACT_TIMEOUT_MS 15000 /* a holder silent this long: try the next one */

/* A daemon's view of its store. */
typedef struct fc_store {
  char local[1024];   /* this daemon's store directory ("" : none given) */
  char id[65];        /* its sentinel ("" : none) */
  char logical[1024]; /* the coordinator's store path ("" : not known yet) */
  char coord_id[65];  /* the coordinator's sentinel */
} fc_store_t;

/* The coordinator: reads dir's sentinel, writing a fresh one first when there is none. */
int fc_store_sentinel_ensure(const char *dir, char id[65], fc_err_t *err);
/* A daemon: reads dir's sentinel; 0, or FC_ENOTFOUND when there is none (id set to ""). */
int fc_store_sentinel_read(const char *dir, char id[65], fc_err_t *err);
/* 1 when the daemon's store is the coordinator's (sentinels agree), 0 when separate, -1 when
 * the coordinator's is not known yet. */
int fc_store_shared(const fc_store_t *s);
/* Path translation between the coordinator's names and this daemon's files (malloc'ed). */
char *fc_store_to_local(const fc_store_t *s, const char *path);
char *fc_store_to_logical(const fc_store_t *s, const char *path);

/* ---- the holder side ---- */

typedef struct fc_artifact_server fc_artifact_server_t;
/* Binds bind (tcp://HOST:PORT, tcp://HOST:* for any port) with CURVE when curve->enabled and
 * serves from its own thread. The allow-list starts empty: nobody is served until
 * fc_artifact_server_allow (the coordinator's list, from the registration ack). */
int fc_artifact_server_start(fc_artifact_server_t **s, const char *bind, const fc_curve_t *curve, fc_err_t *err);
/* The endpoint peers connect to (the bound port, the host name for a wildcard address). */
const char *fc_artifact_server_endpoint(const fc_artifact_server_t *s);
void fc_artifact_server_set_store(fc_artifact_server_t *s, const fc_store_t *store);
/* Replaces the allowed client keys (Z85). */
void fc_artifact_server_allow(fc_artifact_server_t *s, char (*keys)[41], size_t n);
/* A local file whose hash is already known (an output just hashed, a fetched input). */
void fc_artifact_server_known(fc_artifact_server_t *s, const char *local_path, const char *sha256);
/* Bytes served so far. */
uint64_t fc_artifact_server_bytes(const fc_artifact_server_t *s);
void fc_artifact_server_stop(fc_artifact_server_t **s);

/* ---- the fetching side ---- */

typedef struct fc_artifact_src {
  char endpoint[256];
  char key[41]; /* its public key ("" without CURVE) */
} fc_artifact_src_t;

/* Downloads the artifact `path` (the coordinator's name) with hash sha256 and size bytes into
 * dest from the first source that has it. Concurrent fetches of one dest (threads or
 * processes) share one download: the others wait on its lock and find the file. curve: our
 * own keys (NULL or not enabled: plain). */
int fc_artifact_fetch(const fc_artifact_src_t *srcs, size_t nsrc, const char *path, const char *sha256, uint64_t size,
                      const char *dest, const fc_curve_t *curve, uint64_t *fetched, fc_err_t *err);

/* Makes every artifact below the given inputs (the coordinator's paths) present in the store:
 * asks the coordinator at endpoint (LOCATE) which files they are and who holds them, fetches the
 * missing ones to fc_store_to_local paths and, when worker_id is given, tells it (HOLDING) that
 * this worker holds them now. server (may be NULL) learns their hashes. *fetched: bytes copied. */
int fc_artifact_ensure(const char *endpoint, const fc_curve_t *curve, const fc_store_t *store, const char *worker_id,
                       int64_t job, char *const *inputs, size_t ninputs, fc_artifact_server_t *server,
                       uint64_t *fetched, fc_err_t *err);

#endif
