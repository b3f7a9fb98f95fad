/* <setjmp.h> for hexo guests. Application code is compiled once for both ISAs, so jmp_buf
   has one size everywhere: 22 8-byte slots, what aarch64 saves (x19-x30, sp, d8-d15); x86-64
   uses 8 of them (rbx, rbp, r12-r15, rsp, return address). setjmp/longjmp are the library
   OS's (libos/arch/<isa>/setjmp.S). A unikernel has no signals, so the sig* forms keep no
   mask. Functions that call setjmp are compiled per ISA and migration waits while one of
   their frames is on the stack (docs/formats.md, section 4). */
#ifndef _SETJMP_H_
#define _SETJMP_H_

typedef long long jmp_buf[22];
typedef jmp_buf sigjmp_buf;

#ifdef __cplusplus
extern "C" {
#endif
__attribute__((__returns_twice__)) int setjmp(jmp_buf env);
__attribute__((__noreturn__)) void longjmp(jmp_buf env, int value);
#ifdef __cplusplus
}
#endif

#define _setjmp(env) setjmp(env)
#define _longjmp(env, value) longjmp(env, value)
#define sigsetjmp(env, savemask) setjmp(env)
#define siglongjmp(env, value) longjmp(env, value)

#endif
