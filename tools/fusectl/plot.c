/* Loss curves through gnuplot (see plot.h): one definition for the demo and fusectl plot. */
#include "plot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_util.h"

int fc_plot_loss(const char *csv, const char *png, const char *title) {
  /* the paths go inside single quotes of a double-quoted shell word: refuse what would break out */
  const char *parts[3] = {csv, png, title};
  for (int i = 0; i < 3; i++)
    if (strpbrk(parts[i], "'\"`$\\\n")) return -1;
  if (!fc_path_exists(csv)) return -1;
  char cmd[12288];
  int n = snprintf(cmd, sizeof cmd,
                   "gnuplot -e \"set terminal png size 720,420; set output '%s'; set datafile separator ','; "
                   "set title '%s: training loss'; set xlabel 'step'; set ylabel 'loss (nats/token)'; set key off; "
                   "plot '%s' every ::1 using 1:2 with lines\" 2>/dev/null",
                   png, title, csv);
  if (n < 0 || (size_t)n >= sizeof cmd) return -1;
  return system(cmd) == 0 && fc_path_exists(png) ? 0 : -1;
}
