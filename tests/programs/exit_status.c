/* Prints a line to each stream, then exits with the status given as argv[1]: the exit code a
   batch system must report for the job. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    int status = argc > 1 ? atoi(argv[1]) : 0;
    printf("exiting with status %d\n", status);
    fprintf(stderr, "a line on stderr\n");
    return status;
}
