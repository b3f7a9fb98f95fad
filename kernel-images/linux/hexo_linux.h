/* Linux-mode values of the shared page's guest_state (docs/formats.md, "Linux mode"). */
#ifndef HEXO_LINUX_H
#define HEXO_LINUX_H
#define HEXO_LINUX_RUNNING 1
#define HEXO_LINUX_STOPPED 2
#endif
