/* A job that reads its own cgroup limits the way HPC runtimes do: cgroup v2 when
   /sys/fs/cgroup/cgroup.controllers exists (memory.max, cpu.max, pids.max), else v1
   (memory/memory.limit_in_bytes, cpu/cpu.cfs_quota_us and cpu.cfs_period_us, pids/pids.max).
   It prints them in one form (unlimited as "max") before each of argv[1] migration points
   and at its end: wherever the job has moved, it must still find its limits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hexo_check_migrate(void);

/* The first line of `path` without its newline into buf; 0 if it cannot be read. */
static int read_line(const char *path, char *buf, int size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int ok = fgets(buf, size, f) != NULL;
    fclose(f);
    if (ok)
        buf[strcspn(buf, "\n")] = 0;
    return ok;
}

/* v1 writes "no limit" as a huge number (memory) or -1 (cpu quota). */
static const char *v1_limit(char *value)
{
    if (strcmp(value, "-1") == 0 || strtoull(value, NULL, 10) >= (1ULL << 62))
        return "max";
    return value;
}

static void report(int step)
{
    char memory[64], quota[64], period[64], pids[64], cpu[128];
    const char *version;
    if (read_line("/sys/fs/cgroup/cgroup.controllers", cpu, sizeof cpu)
        || read_line("/sys/fs/cgroup/memory.max", memory, sizeof memory)) {
        version = "v2";
        if (!read_line("/sys/fs/cgroup/memory.max", memory, sizeof memory))
            strcpy(memory, "?");
        if (!read_line("/sys/fs/cgroup/cpu.max", cpu, sizeof cpu))
            strcpy(cpu, "?");
        if (!read_line("/sys/fs/cgroup/pids.max", pids, sizeof pids))
            strcpy(pids, "?");
    } else if (read_line("/sys/fs/cgroup/memory/memory.limit_in_bytes", memory,
                         sizeof memory)) {
        version = "v1";
        strcpy(memory, v1_limit(memory));
        if (read_line("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", quota, sizeof quota)
            && read_line("/sys/fs/cgroup/cpu/cpu.cfs_period_us", period, sizeof period))
            snprintf(cpu, sizeof cpu, "%s %s", v1_limit(quota), period);
        else
            strcpy(cpu, "?");
        if (!read_line("/sys/fs/cgroup/pids/pids.max", pids, sizeof pids))
            strcpy(pids, "?");
    } else {
        printf("%d: no cgroup files\n", step);
        return;
    }
    printf("%d: cgroup %s memory=%s cpu=%s pids=%s\n", step, version, memory, cpu, pids);
}

int main(int argc, char **argv)
{
    int points = argc > 1 ? atoi(argv[1]) : 10;
    for (int step = 0; step <= points; step++) {
        report(step);
        fflush(stdout);
        if (step < points)
            hexo_check_migrate();
    }
    return 0;
}
