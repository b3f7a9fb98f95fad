/* knr.h - the problem size shared by knr.c and knr_lib.c, as a legacy "param.h" would. */
#define N BY_CLASS(120, 400, 1000)
