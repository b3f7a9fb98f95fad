/* hexo's application API. */
#ifndef HEXO_H
#define HEXO_H

/* A migration point. Returns at once unless the hypervisor asked this job to move; then the
   job is checkpointed here and later resumes, on either ISA, as if the call had returned. */
void hexo_check_migrate(void);

#endif
