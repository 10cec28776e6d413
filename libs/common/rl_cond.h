/* rl_cond: condition variables whose timed waits run on CLOCK_MONOTONIC, so
 * that a step of the wall clock neither cuts a wait short nor stretches it,
 * and the deadlines those waits take. */
#ifndef RL_COND_H
#define RL_COND_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* pthread_cond_init with CLOCK_MONOTONIC as the clock of its timed waits.
 * Returns pthread_cond_init's result: 0, or an errno value. */
int rl_cond_init(pthread_cond_t *cond);

/* The CLOCK_MONOTONIC time ms milliseconds from now (a negative ms counts as
 * 0): the deadline of a pthread_cond_timedwait on a condition variable made
 * by rl_cond_init. */
struct timespec rl_cond_deadline(int64_t ms);

#endif
