/* What a compressor or archiver does with the file it writes: the input's attributes (stat)
   are copied to the output (fchmod, fchown, utime), links are looked at with lstat, and an
   error from any of them ends the program. The guest cannot change a host file's owner,
   mode or times; these calls must still succeed on a file that exists and fail on one that
   does not. argv[1] = input, argv[2] = output. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>

static int check(const char *what, int ret)
{
    printf("%s: %s\n", what, ret == 0 ? "ok" : strerror(errno));
    return ret != 0;
}

int main(int argc, char **argv)
{
    struct stat in, link;
    struct utimbuf times;
    int bad = 0, fd;

    if (argc < 3)
        return 2;
    bad |= check("stat", stat(argv[1], &in));
    bad |= check("lstat", lstat(argv[1], &link));
    printf("same size: %s\n", in.st_size == link.st_size ? "yes" : "no");
    fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, S_IRUSR | S_IWUSR);
    if (fd < 0)
        return 3;
    if (write(fd, "copied\n", 7) != 7)
        return 4;
    bad |= check("fchmod", fchmod(fd, in.st_mode));
    bad |= check("fchown", fchown(fd, in.st_uid, in.st_gid));
    close(fd);
    times.actime = in.st_atime;
    times.modtime = in.st_mtime;
    bad |= check("utime", utime(argv[2], &times));
    bad |= check("chmod", chmod(argv[2], 0644));
    bad |= check("chown", chown(argv[2], in.st_uid, in.st_gid));
    /* a missing file is an error, as on any system */
    printf("lstat missing: %s\n", lstat("/data/missing", &link) ? strerror(errno) : "ok");
    printf("utime missing: %s\n", utime("/data/missing", &times) ? strerror(errno) : "ok");
    printf("fchmod closed: %s\n", fchmod(fd, 0644) ? strerror(errno) : "ok");
    return bad;
}
