/* Wire messages between fusectl, the coordinator and the stage daemons: MessagePack maps with
 * `v` (protocol version) and `type`, one definition per message type (the table in fc_msg.c).
 * Decoders reject malformed, oversized or unknown input with FC_EFORMAT and never crash. */
#ifndef FC_MSG_H
#define FC_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fc_util.h"

#define FC_PROTO_VERSION 1
#define FC_MSG_MAX_BYTES (16u << 20)  /* a whole message */
#define FC_MSG_MAX_STR (1u << 20)     /* one string, except `text` */
#define FC_MSG_MAX_TEXT (8u << 20)    /* `text`: job YAML or a JSON reply payload */
#define FC_MSG_MAX_LIST 4096          /* entries of one list or map */
#define FC_MSG_MAX_DEPTH 16           /* nesting of values we skip over */

typedef enum fc_msg_type {
  FC_MSG_NONE = 0,
  /* worker <-> coordinator */
  FC_MSG_REGISTER,      /* w->c: id, caps, host, resources {threads, mem}, text (JSON: artifact
                         * endpoint, public key, store id); answered by a reply (the ack) */
  FC_MSG_LEASE_REQUEST, /* w->c: id; the coordinator answers with task_assign when it has one */
  FC_MSG_TASK_ASSIGN,   /* c->w: task, job, kind, params, inputs, outputs, attempt */
  FC_MSG_HEARTBEAT,     /* w->c: id, task, attempt (fencing token), fraction, message, figures */
  FC_MSG_RESULT,        /* w->c: id, task, attempt (fencing token), ok, artifacts | error,
                         * handback; the final fraction, message and figures */
  FC_MSG_BYE,           /* w->c: id (the worker is leaving) */
  FC_MSG_CANCEL,        /* c->w: task (stop it, the coordinator no longer wants it) */
  /* client -> coordinator, each answered by a reply */
  FC_MSG_SUBMIT,     /* text: job YAML */
  FC_MSG_STATUS,     /* job (0: all jobs), since/limit: a page of jobs (job 0) or of its tasks */
  FC_MSG_LIST,       /* since/limit: a page of jobs */
  FC_MSG_CANCEL_JOB, /* job */
  FC_MSG_RETRY,      /* job or task */
  FC_MSG_LOGS,       /* job, since (event id), limit */
  FC_MSG_WORKERS,    /* since/limit: a page of workers */
  FC_MSG_ARTIFACTS,  /* job */
  FC_MSG_REPLY,      /* c->client: ok, error | text (JSON payload) */
  /* coordinator PUB stream */
  FC_MSG_EVENT, /* job, task, kind, state, message, fraction, time */
  /* client <-> logits daemon (its own --serve socket), no job involved */
  FC_MSG_LOGITS_REQUEST, /* text (rendered as a one-turn chat when state is "chat") | ids; k */
  FC_MSG_LOGITS_REPLY,   /* ok, error | text (model name), ids (n), k, top_ids (n*k), top_lp (n*k) */
  /* artifacts between machines (fc_artifact.h), each answered by a reply */
  FC_MSG_LOCATE,  /* ->c: job, inputs: the artifacts below those paths and who holds them */
  FC_MSG_HOLDING, /* w->c: id, artifacts: this worker now holds them too (fetched); bytes: how
                   * many it downloaded itself for them (a copy another process on its store
                   * fetched meanwhile counts 0) */
  /* client -> coordinator (after the others so older peers keep their numbers) */
  FC_MSG_REMOVE_JOB, /* job: delete a finished job's rows and outputs */
  FC_MSG_NTYPES
} fc_msg_type_t;

typedef struct fc_msg_kv {
  char *key, *val;
} fc_msg_kv_t;

typedef struct fc_msg_fig {
  char *name;
  double val;
} fc_msg_fig_t;

typedef struct fc_msg_artifact {
  char *path;
  uint64_t size;
  char sha256[65]; /* lowercase hex */
} fc_msg_artifact_t;

/* One message. Which fields a type carries is fixed by the table in fc_msg.c (listed above);
 * the others stay zero. Strings and arrays are owned by the message (fc_msg_clear frees). */
typedef struct fc_msg {
  fc_msg_type_t type;
  char *id;   /* worker id */
  char *host; /* worker host name */
  char **caps;
  size_t ncaps;
  int64_t threads, mem; /* resources: cores, bytes */
  int64_t task, job, attempt, since;
  int64_t limit; /* paged requests: at most this many rows (0: the server's default) */
  int64_t bytes; /* holding: bytes downloaded */
  char *kind;
  fc_msg_kv_t *params; /* string -> string, passed through to the executor */
  size_t nparams;
  char **inputs;
  size_t ninputs;
  char **outputs;
  size_t noutputs;
  double fraction;
  char *message;
  fc_msg_fig_t *figs;
  size_t nfigs;
  bool ok, handback; /* handback: the worker gives the task back unfinished (shutdown) */
  fc_msg_artifact_t *arts;
  size_t narts;
  char *error;
  char *text;
  char *state;
  double time; /* unix seconds */
  /* token arrays (logits requests), packed as MessagePack bin of little-endian 32-bit values */
  int32_t *ids; /* [nids] */
  size_t nids;
  int64_t k;          /* top-K entries per position */
  int32_t *top_ids;   /* [ntop]: position i's K ids at i*k.. (the distribution of token i+1) */
  float *top_lp;      /* [ntop]: their log-probs */
  size_t ntop;
} fc_msg_t;

const char *fc_msg_type_name(fc_msg_type_t t);

/* Appends the encoding of m to a malloc'ed buffer (*out, *len). Encoding cannot fail on a
 * valid message (asserts on misuse: a NULL required string). */
void fc_msg_encode(const fc_msg_t *m, uint8_t **out, size_t *len);
/* Decodes buf into m (zeroed first). On error m is left empty and FC_EFORMAT returned. */
int fc_msg_decode(const uint8_t *buf, size_t len, fc_msg_t *m, fc_err_t *err);
void fc_msg_clear(fc_msg_t *m);

/* Helpers to fill a message (copy their arguments). */
void fc_msg_add_cap(fc_msg_t *m, const char *cap);
void fc_msg_add_param(fc_msg_t *m, const char *key, const char *val);
void fc_msg_add_input(fc_msg_t *m, const char *path);
void fc_msg_add_output(fc_msg_t *m, const char *path);
void fc_msg_add_fig(fc_msg_t *m, const char *name, double val);
void fc_msg_add_artifact(fc_msg_t *m, const char *path, uint64_t size, const char *sha256);
void fc_msg_set_str(char **field, const char *s);
/* Copies n ids into m->ids; n top entries into m->top_ids/top_lp. */
void fc_msg_set_ids(fc_msg_t *m, const int32_t *ids, size_t n);
void fc_msg_set_top(fc_msg_t *m, const int32_t *ids, const float *lp, size_t n);
/* Looks up a task parameter; NULL when absent. */
const char *fc_msg_param(const fc_msg_t *m, const char *key);

#endif
