/* Offline command flags generated from the stage-parameter schema (see cli_schema.h). */
#include "cli_schema.h"

#include <string.h>

#include "cli.h"

static int id_of(const fc_param_t *p, size_t i) { return p->sopt ? p->sopt : FC_CLI_SCHEMA_OPT + (int)i; }

size_t fc_cli_schema_longopts(const char *kind, struct option *opts) {
  const fc_task_schema_t *s = fc_schema_find(kind);
  size_t n = 0;
  for (size_t i = 0; i < s->nparams; i++)
    if (s->params[i].flag) opts[n++] = (struct option){s->params[i].flag, required_argument, 0, id_of(&s->params[i], i)};
  return n;
}

int fc_cli_schema_option(const char *cmd, const char *kind, int c, const char *arg, void *out, const fc_param_t **which) {
  const fc_task_schema_t *s = fc_schema_find(kind);
  for (size_t i = 0; i < s->nparams; i++) {
    const fc_param_t *p = &s->params[i];
    if (!p->flag || id_of(p, i) != c) continue;
    char what[64];
    fc_err_t err = {0};
    snprintf(what, sizeof what, "--%s", p->flag);
    if (which) *which = p;
    if (fc_schema_set(p, arg, what, out, &err)) return fc_cli_usage_error(cmd, "%s", err.msg);
    return 0;
  }
  return -1;
}

void fc_cli_schema_help(FILE *fp, const char *kind, int width) {
  const fc_task_schema_t *s = fc_schema_find(kind);
  for (size_t i = 0; i < s->nparams; i++) {
    const fc_param_t *p = &s->params[i];
    if (!p->flag) continue;
    char head[96], def[64], range[160], meta[16];
    snprintf(meta, sizeof meta, "%s", p->type == FC_PARAM_ENUM  ? "NAME"
                                       : p->type == FC_PARAM_STR ? "TEXT"
                                       : p->type == FC_PARAM_FLOAT ? "X"
                                                                   : "N");
    if (p->sopt) snprintf(head, sizeof head, "  -%c, --%s %s", p->sopt, p->flag, meta);
    else snprintf(head, sizeof head, "      --%s %s", p->flag, meta);
    fc_schema_format_default(p, def, sizeof def), fc_schema_format_range(p, range, sizeof range);
    if (!*def && !*range) fprintf(fp, "%-*s %s\n", width, head, p->help); /* a string without default */
    else fprintf(fp, "%-*s %s (default %s; %s)\n", width, head, p->help, def, range);
  }
}
