/* A benchmark's set-up before it times a kernel: it asks for the real-time FIFO policy at the
   highest priority, the way timing harnesses keep other processes off their CPU, ignores the
   answer and works, with a migration point in every round; at the end it reads the policy back
   and prints what the scheduling calls answer to bad requests. The output depends on nothing
   but those calls (a Linux process without the privilege to ask prints the same). */
#define _GNU_SOURCE         /* sched_getcpu */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include "migration_point.h"

static const char *err(int r)
{
    return r == 0 ? "ok" : errno == EINVAL ? "EINVAL" : errno == ESRCH ? "ESRCH"
           : errno == EPERM ? "EPERM" : "other";
}

static const char *policy(int p)
{
    return p == SCHED_OTHER ? "OTHER" : p == SCHED_FIFO ? "FIFO" : p == SCHED_RR ? "RR" : "?";
}

int main(void)
{
    struct sched_param p;
    double sum = 0;
    int r;

    memset(&p, 0, sizeof p);
    p.sched_priority = sched_get_priority_max(SCHED_FIFO);
    printf("FIFO priorities %d-%d, RR %d-%d, OTHER %d-%d\n", sched_get_priority_min(SCHED_FIFO),
           p.sched_priority, sched_get_priority_min(SCHED_RR), sched_get_priority_max(SCHED_RR),
           sched_get_priority_min(SCHED_OTHER), sched_get_priority_max(SCHED_OTHER));
    errno = 0;
    r = sched_setscheduler(0, SCHED_FIFO, &p);
    printf("FIFO at %d: %s\n", p.sched_priority, err(r));

    for (int round = 0; round < 200; round++) {
        hexo_check_migrate();
        for (int i = 1; i <= 1000; i++)
            sum += 1.0 / ((double)i * (round + 1));
        sched_yield();
    }
    printf("sum %.6f\n", sum);

    p.sched_priority = -1;
    r = sched_getparam(0, &p);
    printf("policy %s, priority %d (%s)\n", policy(sched_getscheduler(0)), p.sched_priority,
           err(r));
    p.sched_priority = 0;
    errno = 0;
    printf("FIFO at 0: %s\n", err(sched_setscheduler(0, SCHED_FIFO, &p)));
    errno = 0;
    printf("policy 42: %s (max %d)\n", err(sched_setscheduler(0, 42, &p)),
           sched_get_priority_max(42));
    errno = 0;
    printf("no such process: %s\n", err(sched_setparam(999999999, &p)));
    errno = 0;
    printf("OTHER at 0: %s, setparam 0: %s", err(sched_setscheduler(0, SCHED_OTHER, &p)),
           err(sched_setparam(0, &p)));
    p.sched_priority = 5;
    errno = 0;
    printf(", setparam 5: %s\n", err(sched_setparam(0, &p)));
    printf("cpu %d\n", sched_getcpu());
    return 0;
}
