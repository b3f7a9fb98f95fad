/* A mini-app's habit: it writes its report to a file named in the working directory and does
   not check what fopen() returned, so where it may not create the file it dies at the NULL
   stream. */
#include <stdio.h>

int main(void)
{
    FILE *f = fopen("run-report.yaml", "w");

    fprintf(f, "steps: %d\n", 20);
    fclose(f);
    printf("report written\n");
    return 0;
}
