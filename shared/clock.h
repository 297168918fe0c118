/*
 * clock: the two clocks Arnie reads, as seconds in a double.
 *
 * Generic layer.  clock_wall() is the time of day (what envelopes and logs
 * hold); clock_mono() never steps back and is what durations, deadlines
 * and rates are measured with.  Neither fails.
 */
#ifndef ARNIE_CLOCK_H
#define ARNIE_CLOCK_H

/* CLOCK_REALTIME: seconds since the epoch, with the fraction. */
double clock_wall(void);
/* CLOCK_MONOTONIC: seconds since an arbitrary point. */
double clock_mono(void);

#endif
