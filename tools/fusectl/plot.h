/* Loss curves as PNG through gnuplot (fusectl plot, the demo). */
#ifndef FC_PLOT_H
#define FC_PLOT_H

/* Plots a training run's loss.csv (step,loss,... with a header line) to png under title.
 * Returns 0 when the PNG was written, -1 when it was not (no gnuplot, unreadable file). */
int fc_plot_loss(const char *csv, const char *png, const char *title);

#endif
