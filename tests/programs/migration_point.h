/* hexo_check_migrate() from <hexo.h> where the program is built by hexo, a no-op in a
   native build, so that one source serves both. */
#if defined(__has_include)
#if __has_include(<hexo.h>)
#include <hexo.h>
#define HAVE_HEXO 1
#endif
#endif
#ifndef HAVE_HEXO
static void hexo_check_migrate(void) {}
#endif
