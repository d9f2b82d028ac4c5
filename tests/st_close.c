/* st_close A B TOL: exit 0 when every tensor of safetensors file A matches B's tensor of the
 * same name element-wise within |a - b| <= TOL * max(|b|, max |B tensor| * 1e-3) (the relative
 * check of the data-parallel tests), 1 otherwise, printing the worst element. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "fc_st.h"

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: st_close A.safetensors B.safetensors TOL\n");
    return 2;
  }
  fc_err_t err = {0};
  fc_st_t *a = NULL, *b = NULL;
  if (fc_st_open(&a, argv[1], &err) || fc_st_open(&b, argv[2], &err)) {
    fprintf(stderr, "st_close: %s\n", err.msg);
    return 1;
  }
  double tol = atof(argv[3]), worst = 0;
  const char *wname = "";
  int bad = fc_st_count(a) != fc_st_count(b);
  for (size_t i = 0; i < fc_st_count(a) && !bad; i++) {
    const fc_st_tensor_t *ta = fc_st_at(a, i), *tb = fc_st_find(b, ta->name);
    if (!tb) {
      bad = 1;
      break;
    }
    float *oa = NULL, *ob = NULL;
    const float *fa = fc_st_f32(ta, &oa, &err), *fb = fc_st_f32(tb, &ob, &err);
    size_t n = ta->numel;
    double scale = 0;
    for (size_t k = 0; k < n; k++) scale = fmax(scale, fabs(fb[k]));
    for (size_t k = 0; k < n; k++) {
      double rel = fabs((double)fa[k] - fb[k]) / fmax(fabs(fb[k]), scale * 1e-3 + 1e-30);
      if (rel > worst) worst = rel, wname = ta->name;
    }
    free(oa), free(ob);
  }
  printf("largest relative difference %.3g (%s)\n", worst, wname);
  fc_st_close(&a), fc_st_close(&b);
  return bad || worst > tol;
}
