// hexo-live: makes the linked application IR migratable between ISAs.
//
// A migration resumes a frame at the return address of one of its calls, so the compiler
// must say, for that return address, where every value still needed afterwards lives. LLVM 14
// records exactly that for `llvm.experimental.gc.statepoint` calls with the values in a
// "deopt" operand bundle. This pass runs on the one linked module before it is retargeted,
// so both ISAs compile the same statepoints with the same ids and values in the same order.
// docs/formats.md, section 4, states the rules for users; in short:
//
// - Migration points are calls to `void hexo_check_migrate(void)`, by hand or (auto-points)
//   at the entry of every defined function that library code does not call back (directly
//   or through other functions) and at the head of each of its outermost loops that holds
//   another loop.
// - A function reaches a migration point when it calls hexo_check_migrate, calls a function
//   that reaches one, or makes an indirect call while an address-taken function reaches one.
//   Call sites in reaching functions whose callee may reach become statepoints.
// - Unprototyped (K&R) calls are resolved against the linked definition. Dynamic stack
//   allocations (VLAs, alloca()) in reaching functions, and the stack objects whose address
//   may be captured (stored anywhere, or kept by a callee), move to the per-job region of
//   the hexo_dyn_* runtime (dynstack.c), which lies at the same address on both ISAs.
// - Each SSA value live after a site travels through a stack slot of its own (stored
//   before, reloaded after), so the record names the one place the code reads it from;
//   static stack objects are recorded while they may be within their lifetime. Each site
//   ends its block, so instruction selection shares no machine value across it.
//
// Parameters: hexo-live<auto-points;sites=FILE>. FILE receives the side table (JSON): the
// sites with their values' kinds and sizes, the reaching functions, and `problems`, each
// with file:line, when the program cannot be made migratable (the IR is then unchanged).

#include "llvm/ADT/BitVector.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Analysis/CaptureTracking.h"
#include "llvm/Analysis/LoopInfo.h"
#include "llvm/Analysis/ValueTracking.h"
#include "llvm/IR/DebugInfoMetadata.h"
#include "llvm/IR/Dominators.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/MDBuilder.h"
#include "llvm/IR/InstIterator.h"
#include "llvm/IR/Instructions.h"
#include "llvm/IR/IntrinsicInst.h"
#include "llvm/IR/Intrinsics.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/ModuleSlotTracker.h"
#include "llvm/IR/PassManager.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Passes/PassPlugin.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Transforms/Utils/BasicBlockUtils.h"
#include "llvm/Transforms/Utils/Local.h"
#include "llvm/Transforms/Utils/PromoteMemToReg.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace llvm;

namespace {

const char *const MigrationPoint = "hexo_check_migrate";
const char *const RequestWord = "hexo_migrate_request";
const char *const GCStrategy = "statepoint-example";
const Align StackAlign(16);     // of the x86-64 and AAPCS64 ABIs
const std::set<std::string> ReturnsTwice = {"setjmp", "_setjmp", "__setjmp", "sigsetjmp",
                                            "__sigsetjmp", "savectx", "vfork", "getcontext"};

struct Options {
  bool AutoPoints = false;
  bool DumpLiveness = false;
  std::string SitesPath;
};

// "file:line" of an instruction (or of its function when it has no location).
std::string sourceOf(const Instruction *I, bool Basename) {
  unsigned Line = 0;
  StringRef File = "?";
  if (const DebugLoc &DL = I->getDebugLoc()) {
    Line = DL.getLine();
    if (auto *Scope = dyn_cast<DIScope>(DL.getScope()))
      File = Scope->getFilename();
  } else if (DISubprogram *SP = I->getFunction()->getSubprogram()) {
    Line = SP->getLine();
    File = SP->getFilename();
  }
  if (File.empty())
    File = "?";
  return (Basename ? sys::path::filename(File) : File).str() + ":" + std::to_string(Line);
}

std::string where(const Instruction *I) {
  return sourceOf(I, false) + ": function '" + I->getFunction()->getName().str() + "'";
}

// The function a call names directly (through pointer casts), or null for indirect calls.
Function *directCallee(const CallBase *C) {
  return dyn_cast<Function>(C->getCalledOperand()->stripPointerCasts());
}

bool isCalleeUse(const Use &U) {
  const User *Usr = U.getUser();
  if (auto *CE = dyn_cast<ConstantExpr>(Usr)) {
    if (!CE->isCast())
      return false;
    for (const Use &UU : CE->uses())
      if (!isCalleeUse(UU))
        return false;
    return true;
  }
  auto *C = dyn_cast<CallBase>(Usr);
  return C && C->isCallee(&U);
}

// Where a value's address escapes other than as the callee of a call.
bool addressTaken(const Function &F) {
  for (const Use &U : F.uses())
    if (!isCalleeUse(U))
      return true;
  return false;
}

std::string category(Type *T) {
  if (T->isIntegerTy())
    return "int";
  if (T->isFloatingPointTy())
    return "float";
  if (T->isPointerTy())
    return "pointer";
  if (T->isVectorTy())
    return "vector";
  return "other";
}

std::string typeName(Type *T) {
  std::string S;
  raw_string_ostream OS(S);
  T->print(OS);
  return OS.str();
}

// (index path, scalar type) of every scalar inside a first-class aggregate.
void leaves(Type *T, std::vector<unsigned> &Path,
            std::vector<std::pair<std::vector<unsigned>, Type *>> &Out) {
  if (auto *ST = dyn_cast<StructType>(T)) {
    for (unsigned I = 0; I < ST->getNumElements(); ++I) {
      Path.push_back(I);
      leaves(ST->getElementType(I), Path, Out);
      Path.pop_back();
    }
  } else if (auto *AT = dyn_cast<ArrayType>(T)) {
    for (unsigned I = 0; I < AT->getNumElements(); ++I) {
      Path.push_back(I);
      leaves(AT->getElementType(), Path, Out);
      Path.pop_back();
    }
  } else {
    Out.push_back({Path, T});
  }
}

Instruction *firstNonAlloca(BasicBlock &B) {
  auto It = B.begin();
  while (isa<AllocaInst>(*It))
    ++It;
  return &*It;
}

bool isMarker(const Instruction &I) {
  if (auto *II = dyn_cast<IntrinsicInst>(&I))
    return II->isLifetimeStartOrEnd() || isa<DbgInfoIntrinsic>(II);
  return false;
}

// The static stack object a pointer is derived from by casts and address arithmetic.
AllocaInst *baseAlloca(Value *V) {
  for (int Seen = 0; Seen < 32; ++Seen) {
    if (auto *AI = dyn_cast<AllocaInst>(V))
      return AI;
    if (auto *BC = dyn_cast<BitCastInst>(V))
      V = BC->getOperand(0);
    else if (auto *GEP = dyn_cast<GetElementPtrInst>(V))
      V = GEP->getPointerOperand();
    else if (auto *AC = dyn_cast<AddrSpaceCastInst>(V))
      V = AC->getOperand(0);
    else
      return nullptr;
  }
  return nullptr;
}

// Live SSA values and stack objects after each call of one function: block-level backward
// dataflow over SSA values (phi operands are used on their incoming edge), and forward
// dataflow over lifetime markers for the stack objects.
class Liveness {
public:
  explicit Liveness(Function &F) : F(F) {
    for (Argument &A : F.args())
      number(&A);
    for (Instruction &I : instructions(F))
      if (!I.getType()->isVoidTy())
        number(&I);
    for (Instruction &I : F.getEntryBlock())
      if (auto *AI = dyn_cast<AllocaInst>(&I))
        Allocas.push_back(AI);
    values();
    lifetimes();
  }

  // After call C: the stack objects that may be in use and the live SSA values, each in
  // definition order.
  void at(CallBase *C, std::vector<AllocaInst *> &Objects, std::vector<Value *> &Live) {
    BitVector L = LiveAfter.lookup(C);
    if (Index.count(C))
      L.reset(Index[C]);
    std::set<AllocaInst *> Objs(Unmarked.begin(), Unmarked.end());
    for (AllocaInst *A : InLifetime[C])
      Objs.insert(A);
    for (AllocaInst *A : Allocas)
      if (L.test(Index[A])) {
        Objs.insert(A);
        L.reset(Index[A]);
      }
    for (AllocaInst *A : Allocas)
      if (Objs.count(A))
        Objects.push_back(A);
    for (unsigned I : L.set_bits())
      Live.push_back(Values[I]);
  }

  const BitVector &liveAfter(CallBase *C) { return LiveAfter[C]; }
  Value *value(unsigned I) const { return Values[I]; }

private:
  Function &F;
  std::vector<Value *> Values;
  DenseMap<Value *, unsigned> Index;
  std::vector<AllocaInst *> Allocas, Unmarked;
  DenseMap<CallBase *, BitVector> LiveAfter;
  DenseMap<CallBase *, std::set<AllocaInst *>> InLifetime;

  void number(Value *V) {
    Index[V] = Values.size();
    Values.push_back(V);
  }

  void uses(Instruction &I, BitVector &Set) {
    if (isa<PHINode>(I) || isMarker(I))
      return;
    for (Value *Op : I.operands()) {
      auto It = Index.find(Op);
      if (It != Index.end())
        Set.set(It->second);
    }
  }

  void values() {
    unsigned N = Values.size();
    DenseMap<BasicBlock *, BitVector> Gen, Kill, In, Out;
    for (BasicBlock &B : F) {
      BitVector G(N), K(N);
      for (Instruction &I : reverse(B)) {
        auto It = Index.find(&I);
        if (It != Index.end()) {
          G.reset(It->second);
          K.set(It->second);
        }
        uses(I, G);
      }
      Gen[&B] = G;
      Kill[&B] = K;
      In[&B] = BitVector(N);
      Out[&B] = BitVector(N);
    }
    for (bool Changed = true; Changed;) {
      Changed = false;
      for (BasicBlock &B : reverse(F)) {
        BitVector O(N);
        for (BasicBlock *S : successors(&B)) {
          BitVector SIn = In[S];
          for (PHINode &P : S->phis()) {
            SIn.reset(Index[&P]);
            auto It = Index.find(P.getIncomingValueForBlock(&B));
            if (It != Index.end())
              O.set(It->second);
          }
          O |= SIn;
        }
        BitVector NewIn = O;
        NewIn.reset(Kill[&B]);
        NewIn |= Gen[&B];
        if (O != Out[&B] || NewIn != In[&B]) {
          Out[&B] = O;
          In[&B] = NewIn;
          Changed = true;
        }
      }
    }
    for (BasicBlock &B : F) {
      BitVector L = Out[&B];
      for (Instruction &I : reverse(B)) {
        if (auto *C = dyn_cast<CallBase>(&I))
          LiveAfter[C] = L;
        auto It = Index.find(&I);
        if (It != Index.end())
          L.reset(It->second);
        uses(I, L);
      }
    }
  }

  void lifetimes() {
    DenseMap<Instruction *, std::pair<bool, AllocaInst *>> Marks;
    std::set<AllocaInst *> Marked;
    for (Instruction &I : instructions(F))
      if (auto *II = dyn_cast<IntrinsicInst>(&I))
        if (II->isLifetimeStartOrEnd())
          if (AllocaInst *A = baseAlloca(II->getArgOperand(1))) {
            Marks[II] = {II->getIntrinsicID() == Intrinsic::lifetime_start, A};
            Marked.insert(A);
          }
    for (AllocaInst *A : Allocas)
      if (!Marked.count(A))
        Unmarked.push_back(A);
    std::map<BasicBlock *, std::set<AllocaInst *>> StateIn, StateOut;
    auto Walk = [&](BasicBlock &B, std::set<AllocaInst *> Cur, bool Record) {
      for (Instruction &I : B) {
        if (Record)
          if (auto *C = dyn_cast<CallBase>(&I))
            InLifetime[C] = Cur;
        auto It = Marks.find(&I);
        if (It != Marks.end()) {
          if (It->second.first)
            Cur.insert(It->second.second);
          else
            Cur.erase(It->second.second);
        }
      }
      return Cur;
    };
    for (bool Changed = true; Changed;) {
      Changed = false;
      for (BasicBlock &B : F) {
        std::set<AllocaInst *> Cur;
        for (BasicBlock *P : predecessors(&B))
          Cur.insert(StateOut[P].begin(), StateOut[P].end());
        StateIn[&B] = Cur;
        std::set<AllocaInst *> O = Walk(B, Cur, false);
        if (O != StateOut[&B]) {
          StateOut[&B] = O;
          Changed = true;
        }
      }
    }
    for (BasicBlock &B : F)
      Walk(B, StateIn[&B], true);
  }
};

class LiveValuesPass {
public:
  LiveValuesPass(Module &M, const Options &Opts)
      : M(M), Ctx(M.getContext()), DL(M.getDataLayout()), Opts(Opts) {}

  void run() {
    if (Opts.DumpLiveness)
      dumpLiveness();
    resolveUnprototypedCalls();
    for (Function &F : M)
      if (!F.isDeclaration())
        hoistStaticAllocas(F);
    std::map<Function *, std::string> Callbacks = libraryCallbacks();
    if (Opts.AutoPoints)
      insertAutoPoints(Callbacks);
    reachability();
    reject(Callbacks);
    if (Problems.empty()) {
      for (Function *F : Reaching)
        copyByValArguments(*F);
      for (Function *F : Reaching)
        defineUndefinedPhiInputs(*F);
      for (Function *F : Reaching)
        moveDynamicAllocations(*F);
      for (Function *F : Reaching)
        instrument(*F);
    }
    writeTable();
  }

private:
  Module &M;
  LLVMContext &Ctx;
  const DataLayout &DL;
  const Options &Opts;
  std::set<Function *> Targets;
  std::vector<Function *> Reaching;
  bool IndirectOK = false;
  std::vector<std::string> Problems;
  std::vector<std::string> Resolved;
  std::map<CallBase *, std::string> Unresolved;    // K&R calls that do not fit: why
  json::Array Sites;
  json::Object LiveAfterCalls;

  Function *migrationPoint() {
    return M.getFunction(MigrationPoint);
  }

  // K&R calls (`int f();`, or no declaration at all, then `f(3)`) name the definition
  // through a cast to a variadic type; after llvm-link the definition is known, so they
  // call it with its own type (and the migration point, declared `void
  // hexo_check_migrate();`, with no arguments). Arguments are converted as the definition
  // reads them: a promoted integer is truncated or extended, a promoted double rounded to
  // float, pointers cast. The first thing that does not fit is the call's `Unresolved`
  // reason; such calls stay, and are refused if they may reach a migration point.
  FunctionType *resolvedType(CallInst *C) {
    Function *Callee = directCallee(C);
    if (!Callee || C->hasOperandBundles() || C->isMustTailCall())
      return nullptr;
    FunctionType *FT = Callee->getFunctionType();
    if (Callee->getName() == MigrationPoint && C->arg_size() == 0)
      FT = FunctionType::get(Type::getVoidTy(Ctx), false);
    else if (Callee->isDeclaration() || Callee->isVarArg())
      return nullptr;
    if (C->getFunctionType() == FT)
      return nullptr;
    auto Refuse = [&](const std::string &Why) -> FunctionType * {
      Unresolved[C] = Why;
      return nullptr;
    };
    if (C->arg_size() != FT->getNumParams())
      return Refuse(std::to_string(C->arg_size()) + " arguments, the definition takes " +
                    std::to_string(FT->getNumParams()));
    Type *Ret = FT->getReturnType(), *CallRet = C->getType();
    if (Ret != CallRet && !CallRet->isVoidTy() && !C->use_empty() &&
        !(Ret->isPointerTy() && CallRet->isPointerTy()))
      return Refuse("its result is used as " + typeName(CallRet) + ", the definition returns " +
                    typeName(Ret));
    for (unsigned I = 0; I < C->arg_size(); ++I) {
      Type *A = C->getArgOperand(I)->getType(), *P = FT->getParamType(I);
      bool Fits = A == P || (A->isPointerTy() && P->isPointerTy()) ||
                  (A->isIntegerTy() && P->isIntegerTy()) || (A->isDoubleTy() && P->isFloatTy());
      if (!Fits)
        return Refuse("argument " + std::to_string(I + 1) + " is " + typeName(A) +
                      ", the definition takes " + typeName(P));
    }
    return FT;
  }

  void resolveUnprototypedCalls() {
    std::vector<std::pair<CallInst *, FunctionType *>> Calls;
    for (Function &F : M)
      for (Instruction &I : instructions(F))
        if (auto *C = dyn_cast<CallInst>(&I))
          if (FunctionType *FT = resolvedType(C))
            Calls.push_back({C, FT});
    for (auto &CF : Calls) {
      CallInst *C = CF.first;
      FunctionType *FT = CF.second;
      Function *Callee = directCallee(C);
      IRBuilder<> B(C);
      std::vector<Value *> Args;
      for (unsigned I = 0; I < C->arg_size(); ++I) {
        Value *A = C->getArgOperand(I);
        Type *P = FT->getParamType(I);
        if (A->getType()->isIntegerTy())
          Args.push_back(B.CreateSExtOrTrunc(A, P));
        else if (A->getType() != P && P->isFloatTy())
          Args.push_back(B.CreateFPTrunc(A, P));
        else
          Args.push_back(B.CreateBitCast(A, P));
      }
      Value *Target = Callee->getFunctionType() == FT
                          ? (Value *)Callee
                          : ConstantExpr::getBitCast(Callee, FT->getPointerTo());
      CallInst *New = B.CreateCall(FT, Target, Args);
      New->setCallingConv(Callee->getCallingConv());
      New->setTailCallKind(C->getTailCallKind());
      New->setDebugLoc(C->getDebugLoc());
      std::vector<AttributeSet> ArgAttrs;
      for (unsigned I = 0; I < FT->getNumParams(); ++I)     // the callee's signext, zeroext...
        ArgAttrs.push_back(Callee->getFunctionType() == FT
                               ? Callee->getAttributes().getParamAttrs(I).removeAttribute(
                                     Ctx, Attribute::Returned)
                               : AttributeSet());
      New->setAttributes(AttributeList::get(Ctx, C->getAttributes().getFnAttrs(),
                                            AttributeSet(), ArgAttrs));
      if (!C->use_empty())
        C->replaceAllUsesWith(FT->getReturnType() == C->getType()
                                  ? (Value *)New
                                  : B.CreateBitCast(New, C->getType()));
      New->takeName(C);
      Resolved.push_back(where(C) + ": call of '" + Callee->getName().str() + "'");
      C->eraseFromParent();
    }
  }

  // clang interleaves the entry block's fixed-size allocas with their bitcasts; gathered at
  // its top, they stay in the entry block when a migration point is put after them and the
  // block is split there (an alloca elsewhere would be a dynamic stack allocation).
  static void hoistStaticAllocas(Function &F) {
    BasicBlock &Entry = F.getEntryBlock();
    std::vector<AllocaInst *> Fixed;
    for (Instruction &I : Entry)
      if (auto *AI = dyn_cast<AllocaInst>(&I))
        if (isa<Constant>(AI->getArraySize()))
          Fixed.push_back(AI);
    Instruction *First = &*Entry.getFirstInsertionPt();
    for (AllocaInst *AI : Fixed)
      if (AI != First)
        AI->moveBefore(First);
      else
        First = AI->getNextNode();
  }

  // Application functions that library code may call: passed to a declared function, or a
  // constructor/destructor. They cannot host a migration point (a library frame would be
  // below them). Application functions compiled per ISA (declarations marked "hexo-per-isa"
  // by hexo/toolchain/perisa.py) are not library code: migration waits while their frames,
  // and whatever they call back, are on the stack.
  std::map<Function *, std::string> libraryCallbacks() {
    std::map<Function *, std::string> Out;
    for (Function &F : M)
      for (Instruction &I : instructions(F)) {
        auto *C = dyn_cast<CallBase>(&I);
        Function *Callee = C ? directCallee(C) : nullptr;
        if (!Callee || !Callee->isDeclaration() || Callee->isIntrinsic() ||
            Callee->hasFnAttribute("hexo-per-isa"))
          continue;
        for (Value *A : C->args()) {
          auto *G = dyn_cast<Function>(A->stripPointerCasts());
          if (G && (!G->isDeclaration() || G->getName() == MigrationPoint) && !Out.count(G))
            Out[G] = where(C) + ": passes '" + G->getName().str() +
                     "' to library function '" + Callee->getName().str() + "'";
        }
      }
    for (const char *Name : {"llvm.global_ctors", "llvm.global_dtors"})
      if (GlobalVariable *GV = M.getGlobalVariable(Name))
        if (auto *Arr = dyn_cast_or_null<ConstantArray>(GV->getInitializer()))
          for (Value *E : Arr->operands())
            if (auto *S = dyn_cast<ConstantStruct>(E))
              if (auto *G = dyn_cast<Function>(S->getOperand(1)->stripPointerCasts()))
                if (!Out.count(G))
                  Out[G] = "'" + G->getName().str() + "' is a constructor or destructor";
    return Out;
  }

  // Library callbacks and every function they call directly: a point in any of them would
  // make the callback reach one (Lua's signal handler calls lua_sethook, which main's code
  // calls too).
  std::set<Function *> calledBack(const std::map<Function *, std::string> &Callbacks) {
    std::set<Function *> Out;
    std::vector<Function *> Work;
    for (auto &KV : Callbacks)
      Work.push_back(KV.first);
    while (!Work.empty()) {
      Function *F = Work.back();
      Work.pop_back();
      if (F->isDeclaration() || !Out.insert(F).second)
        continue;
      for (Instruction &I : instructions(*F))
        if (auto *C = dyn_cast<CallBase>(&I))
          if (Function *G = directCallee(C))
            Work.push_back(G);
    }
    return Out;
  }

  // Each inserted point is a call only when the host has raised its request: the word the
  // point itself reads first (hexo_migrate_request, defined by the library OS at the shared
  // page) is tested inline, so a point in a hot loop or a small function costs a load and a
  // branch, not a call whose live values go through stack slots (measured: Lua, a Huffman
  // coder and recursive Fibonacci ran 1.4-2.3x slower with calls).
  void insertAutoPoints(const std::map<Function *, std::string> &Callbacks) {
    FunctionCallee Point =
        M.getOrInsertFunction(MigrationPoint, FunctionType::get(Type::getVoidTy(Ctx), false));
    Type *I32 = Type::getInt32Ty(Ctx);
    Constant *Request = M.getOrInsertGlobal(RequestWord, I32);
    MDNode *Rarely = MDBuilder(Ctx).createBranchWeights(1, 1 << 20);
    auto guardedPoint = [&](Instruction *Before, DebugLoc Loc) {
      IRBuilder<> B(Before);
      B.SetCurrentDebugLocation(Loc);
      Value *Raised = B.CreateICmpNE(B.CreateLoad(I32, Request, /*isVolatile=*/true),
                                     ConstantInt::get(I32, 0));
      Instruction *Then = SplitBlockAndInsertIfThen(Raised, Before, false, Rarely);
      CallInst::Create(Point, "", Then)->setDebugLoc(Loc);
    };
    std::set<Function *> Skipped = calledBack(Callbacks);
    for (Function &F : M) {
      if (F.isDeclaration() || Skipped.count(&F))
        continue;
      DebugLoc FLoc;
      if (DISubprogram *SP = F.getSubprogram())
        FLoc = DILocation::get(Ctx, SP->getLine(), 0, SP);
      // Outermost loops that hold another loop first, while the CFG is the compiler's:
      // a job spending its time in main's time-step loop could otherwise move only once it
      // ends. One check per outer iteration, whose inner loops do the work.
      DominatorTree DT(F);
      LoopInfo LI(DT);
      std::vector<std::pair<Instruction *, DebugLoc>> Heads;
      for (Loop *L : LI)
        if (!L->getSubLoops().empty())
          Heads.push_back({&*L->getHeader()->getFirstInsertionPt(),
                           L->getStartLoc() ? L->getStartLoc() : FLoc});
      for (auto &H : Heads)
        guardedPoint(H.first, H.second);
      guardedPoint(firstNonAlloca(F.getEntryBlock()), FLoc);
    }
  }

  bool mayReach(CallBase *C) {
    if (Function *F = directCallee(C))
      return Targets.count(F);
    if (C->isInlineAsm())
      return false;
    return IndirectOK;
  }

  void reachability() {
    if (Function *P = migrationPoint())
      Targets.insert(P);
    std::vector<Function *> AddrTaken;
    for (Function &F : M)
      if (addressTaken(F))
        AddrTaken.push_back(&F);
    for (bool Changed = true; Changed;) {
      Changed = false;
      IndirectOK = false;
      for (Function *F : AddrTaken)
        IndirectOK |= Targets.count(F) > 0;
      for (Function &F : M) {
        if (F.isDeclaration() || Targets.count(&F))
          continue;
        for (Instruction &I : instructions(F))
          if (auto *C = dyn_cast<CallBase>(&I))
            if (mayReach(C)) {
              Targets.insert(&F);
              Changed = true;
              break;
            }
      }
    }
    for (Function &F : M)
      if (!F.isDeclaration() && Targets.count(&F))
        Reaching.push_back(&F);
  }

  void reject(const std::map<Function *, std::string> &Callbacks) {
    for (Function *F : Reaching)
      for (Instruction &I : instructions(*F)) {
        if (isa<InvokeInst>(I) || isa<CallBrInst>(I)) {
          Problems.push_back(where(&I) + ": " + I.getOpcodeName() +
                             " on a path to a migration point");
          continue;
        }
        if (auto *AI = dyn_cast<AllocaInst>(&I))
          if (AI->isUsedWithInAlloca() || AI->getAddressSpace() != 0)
            Problems.push_back(where(&I) + ": inalloca or address-space stack object on a "
                                           "path to a migration point");
        auto *C = dyn_cast<CallBase>(&I);
        if (!C)
          continue;
        Function *Callee = directCallee(C);
        std::string Name = Callee ? Callee->getName().str() : "";
        if (ReturnsTwice.count(Name) || C->hasFnAttr(Attribute::ReturnsTwice)) {
          Problems.push_back(where(C) + ": calls " + (Name.empty() ? "a function" : Name) +
                             ", which returns twice like setjmp, on a path to a migration "
                             "point (its jmp_buf holds ISA registers)");
          continue;
        }
        if (!mayReach(C))
          continue;
        if (C->getFunctionType()->isVarArg()) {
          if (Callee)
            Problems.push_back(where(C) + ": unprototyped call of '" + Name +
                               "' may reach a migration point and does not fit its definition (" +
                               (Unresolved.count(C) ? Unresolved[C] : "a variadic function") +
                               "); give the function a prototype");
          else
            Problems.push_back(where(C) + ": indirect call through a variadic or unprototyped "
                                          "pointer may reach a migration point; give the "
                                          "pointer a prototype");
        } else if (C->isMustTailCall() || C->hasOperandBundles()) {
          Problems.push_back(where(C) + ": musttail call or operand bundle on a path to a "
                                        "migration point");
        }
      }
    for (auto &KV : Callbacks)
      if (Targets.count(KV.first))
        Problems.push_back(KV.second + ", which reaches a migration point (library frames "
                                       "cannot be migrated)");
  }

  // A struct passed by value lives in the caller's outgoing-argument area, which is no
  // stack object of either frame: the transform could neither copy it nor re-aim pointers
  // to it. A reaching function copies it into a stack object of its own before its first
  // call and uses only the copy.
  void copyByValArguments(Function &F) {
    BasicBlock &Entry = F.getEntryBlock();
    for (Argument &A : F.args()) {
      if (!A.hasByValAttr() || A.use_empty())
        continue;
      Type *T = A.getParamByValType();
      auto *Copy = new AllocaInst(T, DL.getAllocaAddrSpace(), nullptr,
                                  A.getParamAlign().valueOrOne(), A.getName() + ".hexo.copy",
                                  &*Entry.begin());
      A.replaceAllUsesWith(Copy);
      IRBuilder<> B(firstNonAlloca(Entry));
      B.CreateMemCpy(Copy, Copy->getAlign(), &A, A.getParamAlign(),
                     DL.getTypeAllocSize(T));
    }
  }

  // A phi input that is undefined (a C variable set on some branches only, read on others
  // the program never takes: NPB's per-class reference values) leaves the register of the
  // phi holding whatever it last held on that path, a value liveregs.py cannot tell from a
  // live unrecorded one. Zero is as good a value as any there, and makes the path define it.
  static void defineUndefinedPhiInputs(Function &F) {
    for (BasicBlock &B : F)
      for (PHINode &P : B.phis())
        for (unsigned I = 0; I < P.getNumIncomingValues(); ++I)
          if (isa<UndefValue>(P.getIncomingValue(I)) && !P.getType()->isTokenTy())
            P.setIncomingValue(I, Constant::getNullValue(P.getType()));
  }

  // VLAs and alloca() in a reaching function take their memory from the per-job region of
  // dynstack.c instead of the machine stack: the region is application data at the same
  // address on both ISAs, so a migration copies it and no pointer into it needs rewriting.
  // stacksave/stackrestore become the region's mark/release, and every return releases
  // what the function took.
  void moveDynamicAllocations(Function &F) {
    std::vector<AllocaInst *> Dynamic, Escaping;
    std::vector<IntrinsicInst *> Saves, Restores;
    for (Instruction &I : instructions(F)) {
      if (auto *AI = dyn_cast<AllocaInst>(&I)) {
        if (!AI->isStaticAlloca())
          Dynamic.push_back(AI);
        else if (PointerMayBeCaptured(AI, /*ReturnCaptures=*/true, /*StoreCaptures=*/true))
          Escaping.push_back(AI);
      } else if (auto *II = dyn_cast<IntrinsicInst>(&I)) {
        if (II->getIntrinsicID() == Intrinsic::stacksave)
          Saves.push_back(II);
        else if (II->getIntrinsicID() == Intrinsic::stackrestore)
          Restores.push_back(II);
      }
    }
    if (Dynamic.empty() && Saves.empty() && Escaping.empty())
      return;
    Type *I8P = Type::getInt8PtrTy(Ctx), *I64 = Type::getInt64Ty(Ctx);
    FunctionCallee Mark = M.getOrInsertFunction("hexo_dyn_mark", I8P);
    FunctionCallee Alloc = M.getOrInsertFunction("hexo_dyn_alloc", I8P, I64, I64);
    FunctionCallee Release =
        M.getOrInsertFunction("hexo_dyn_release", Type::getVoidTy(Ctx), I8P);
    DebugLoc Loc;
    if (DISubprogram *SP = F.getSubprogram())
      Loc = DILocation::get(Ctx, SP->getLine(), 0, SP);
    auto Located = [&](CallInst *C, Instruction *From) {
      C->setDebugLoc(From && From->getDebugLoc() ? From->getDebugLoc() : Loc);
      return C;
    };
    CallInst *Start = Located(
        CallInst::Create(Mark, "hexo.dyn.start", firstNonAlloca(F.getEntryBlock())), nullptr);
    for (BasicBlock &B : F)
      if (auto *R = dyn_cast<ReturnInst>(B.getTerminator()))
        Located(CallInst::Create(Release, {Start}, "", R), R);
    for (IntrinsicInst *S : Saves) {
      CallInst *C = Located(CallInst::Create(Mark, "", S), S);
      S->replaceAllUsesWith(C);
      C->takeName(S);
      S->eraseFromParent();
    }
    for (IntrinsicInst *R : Restores) {
      Located(CallInst::Create(Release, {R->getArgOperand(0)}, "", R), R);
      R->eraseFromParent();
    }
    // A stack object whose address may be kept where the transform cannot see it (stored
    // in the heap or a global, in another stack object, or by a callee: bzip2's input
    // buffer in its stream state) would move on the other ISA and leave that copy pointing
    // at the old place. It takes its memory from the region too, once per call, after the
    // mark that the function's returns release to.
    for (AllocaInst *AI : Escaping) {
      IRBuilder<> B(Start->getNextNode());
      CallInst *C = Located(B.CreateCall(Alloc, {B.getInt64(DL.getTypeAllocSize(
                                                     AI->getAllocatedType()) *
                                                 cast<ConstantInt>(AI->getArraySize())
                                                     ->getZExtValue()),
                                                 B.getInt64(AI->getAlign().value())}),
                            AI);
      replaceAlloca(AI, B.CreateBitCast(C, AI->getType()));
    }
    for (AllocaInst *AI : Dynamic) {
      IRBuilder<> B(AI);
      Value *Count = B.CreateZExtOrTrunc(AI->getArraySize(), I64);
      Value *Bytes = B.CreateMul(Count, B.getInt64(DL.getTypeAllocSize(AI->getAllocatedType())));
      CallInst *C = Located(B.CreateCall(Alloc, {Bytes, B.getInt64(AI->getAlign().value())}), AI);
      replaceAlloca(AI, B.CreateBitCast(C, AI->getType()));
    }
  }

  static void replaceAlloca(AllocaInst *AI, Value *P) {
    std::vector<Instruction *> Markers;
    for (User *U : AI->users())
      collectMarkers(U, Markers);
    for (Instruction *I : Markers)
      I->eraseFromParent();
    AI->replaceAllUsesWith(P);
    P->takeName(AI);
    AI->eraseFromParent();
  }

  static void collectMarkers(User *U, std::vector<Instruction *> &Out) {
    if (auto *II = dyn_cast<IntrinsicInst>(U)) {
      if (II->isLifetimeStartOrEnd())
        Out.push_back(II);
    } else if (isa<BitCastInst>(U) || isa<GetElementPtrInst>(U)) {
      for (User *UU : U->users())
        collectMarkers(UU, Out);
    }
  }

  struct SiteValues {
    CallBase *Call;
    std::vector<AllocaInst *> Objects;
    std::vector<Value *> Live;
  };

  void instrument(Function &F) {
    std::vector<SiteValues> Chosen;
    {
      Liveness L(F);
      for (Instruction &I : instructions(F))
        if (auto *C = dyn_cast<CallBase>(&I))
          if (mayReach(C) && !C->getFunctionType()->isVarArg()) {
            Chosen.push_back({C, {}, {}});
            L.at(C, Chosen.back().Objects, Chosen.back().Live);
          }
    }
    if (Chosen.empty())
      return;
    // x86-64 returns the sret pointer in rax, so its code keeps a copy of the incoming
    // pointer in a callee-saved register until the return, a value of no IR instruction.
    // Recording the argument at every site lets the transform set that copy (liveregs.py).
    Argument *SRet = nullptr;
    for (Argument &A : F.args())
      if (A.hasStructRetAttr())
        SRet = &A;
    if (SRet)
      for (SiteValues &S : Chosen)
        if (std::find(S.Live.begin(), S.Live.end(), SRet) == S.Live.end())
          S.Live.push_back(SRet);
    ModuleSlotTracker MST(&M);
    MST.incorporateFunction(F);
    auto Name = [&](Value *V) {
      std::string S;
      raw_string_ostream OS(S);
      V->printAsOperand(OS, false, MST);
      return OS.str();
    };
    std::map<Value *, std::string> Names;
    for (SiteValues &S : Chosen) {
      for (Value *V : S.Live)
        Names.emplace(V, Name(V));
      for (AllocaInst *A : S.Objects)
        Names.emplace(A, Name(A));
    }

    // Every value that is live after some site becomes a variable: one stack slot per
    // scalar part for the record, and a variable that PromoteMemToReg turns back into SSA
    // with the reloaded values flowing to every use after a site.
    Instruction *AllocaPoint = &*F.getEntryBlock().begin();
    std::map<Value *, AllocaInst *> Vars;
    std::map<Value *, std::vector<std::pair<std::vector<unsigned>, AllocaInst *>>> Slots;
    unsigned J = 0;
    for (SiteValues &S : Chosen)
      for (Value *V : S.Live) {
        if (Vars.count(V))
          continue;
        AllocaInst *Var;
        if (auto *I = dyn_cast<Instruction>(V)) {
          Var = DemoteRegToStack(*I, false, AllocaPoint);
        } else {
          Var = demoteArgument(cast<Argument>(V), AllocaPoint);
        }
        Var->setName("hexo.var." + Twine(J));
        Vars[V] = Var;
        std::vector<std::pair<std::vector<unsigned>, Type *>> Parts;
        std::vector<unsigned> Path;
        leaves(V->getType(), Path, Parts);
        // At most the ABI's stack alignment: a vector slot aligned to its 32-byte size
        // would make the frame realign its stack pointer, whose distance to the CFA then
        // depends on where the frame sits, not on the code.
        for (unsigned K = 0; K < Parts.size(); ++K)
          Slots[V].push_back(
              {Parts[K].first,
               new AllocaInst(Parts[K].second, DL.getAllocaAddrSpace(), nullptr,
                              std::min(DL.getPrefTypeAlign(Parts[K].second), StackAlign),
                              "hexo.slot." + Twine(J) + "." + Twine(K), AllocaPoint)});
        ++J;
      }

    // A pointer live across a site into an object outside its lifetime there (clang hoists
    // the address of a loop's local out of the loop): the object is recorded too, so that
    // the transform has somewhere to aim the pointer.
    for (SiteValues &S : Chosen)
      for (Value *V : S.Live)
        if (AllocaInst *A = baseAlloca(V))
          if (std::find(S.Objects.begin(), S.Objects.end(), A) == S.Objects.end())
            S.Objects.push_back(A);

    for (SiteValues &S : Chosen) {
      unsigned Id = Sites.size() + 1;
      CallBase *C = S.Call;
      json::Array Values;
      std::vector<Value *> Deopt;
      for (AllocaInst *A : S.Objects) {
        Deopt.push_back(A);
        Values.push_back(json::Object{
            {"type", "alloca"}, {"ir_type", typeName(A->getType())}, {"size", 8},
            {"ir", Names[A]},
            {"alloca_size", (int64_t)A->getAllocationSizeInBits(DL)->getFixedSize() / 8}});
      }
      IRBuilder<> B(C);
      for (Value *V : S.Live) {
        Value *Cur = B.CreateLoad(V->getType(), Vars[V]);
        for (auto &P : Slots[V]) {
          Value *Part = P.first.empty() ? Cur : B.CreateExtractValue(Cur, P.first);
          B.CreateAlignedStore(Part, P.second, P.second->getAlign());
          Deopt.push_back(P.second);
          std::string Ir = Names[V];
          for (unsigned K : P.first)
            Ir += "." + std::to_string(K);
          Type *T = P.second->getAllocatedType();
          json::Object Value{{"type", category(T)},
                             {"ir_type", typeName(T)},
                             {"size", (int64_t)DL.getTypeStoreSize(T)},
                             {"ir", Ir},
                             {"slot", true}};
          if (V == SRet)
            Value["sret"] = true;
          Values.push_back(std::move(Value));
        }
      }
      Function *Callee = directCallee(C);
      statepoint(C, Id, Deopt);
      BasicBlock *After =
          SplitBlock(C->getParent(), C, (DominatorTree *)nullptr, nullptr,
                     nullptr, "hexo.after." + Twine(Id));
      B.SetInsertPoint(&*After->getFirstInsertionPt());
      for (Value *V : S.Live) {
        Value *Agg = UndefValue::get(V->getType());
        for (auto &P : Slots[V]) {
          Value *Back = B.CreateAlignedLoad(P.second->getAllocatedType(), P.second,
                                            P.second->getAlign());
          Agg = P.first.empty() ? Back : B.CreateInsertValue(Agg, Back, P.first);
        }
        B.CreateStore(Agg, Vars[V]);
      }
      Sites.push_back(json::Object{
          {"id", Id},
          {"function", F.getName()},
          {"callee", Callee ? Callee->getName().str() : std::string("<indirect>")},
          {"source", sourceOf(C, true)},
          {"values", std::move(Values)}});
    }

    for (SiteValues &S : Chosen)
      S.Call->eraseFromParent();
    std::vector<AllocaInst *> Promote;
    for (auto &KV : Vars)
      Promote.push_back(KV.second);
    DominatorTree DT(F);
    PromoteMemToReg(Promote, DT);
    F.setGC(GCStrategy);
  }

  // The one static stack object pointer V is derived from, if any.
  static AllocaInst *baseAlloca(Value *V) {
    if (!V->getType()->isPointerTy())
      return nullptr;
    SmallVector<const Value *, 4> Under;
    getUnderlyingObjects(V, Under, nullptr, 0);
    auto *A = Under.size() == 1 ? dyn_cast<AllocaInst>(Under[0]) : nullptr;
    return A && A->isStaticAlloca() ? const_cast<AllocaInst *>(A) : nullptr;
  }

  AllocaInst *demoteArgument(Argument *A, Instruction *AllocaPoint) {
    auto *Var = new AllocaInst(A->getType(), DL.getAllocaAddrSpace(), "", AllocaPoint);
    std::vector<Use *> Uses;
    for (Use &U : A->uses())
      Uses.push_back(&U);
    std::map<BasicBlock *, Value *> PhiLoads;
    for (Use *U : Uses) {
      auto *I = cast<Instruction>(U->getUser());
      if (auto *P = dyn_cast<PHINode>(I)) {
        BasicBlock *In = P->getIncomingBlock(*U);
        Value *&L = PhiLoads[In];
        if (!L)
          L = new LoadInst(A->getType(), Var, "", In->getTerminator());
        U->set(L);
      } else {
        U->set(new LoadInst(A->getType(), Var, "", I));
      }
    }
    new StoreInst(A, Var, firstNonAlloca(*AllocaPoint->getParent()));
    return Var;
  }

  // A statepoint with the deopt values in place of call C (and a gc.result for its value).
  // C stays, without uses, until every
  // site of the function is done: other sites' live values may name it.
  void statepoint(CallBase *C, unsigned Id, ArrayRef<Value *> Deopt) {
    Value *Callee = C->getCalledOperand();
    Function *SPF =
        Intrinsic::getDeclaration(&M, Intrinsic::experimental_gc_statepoint, {Callee->getType()});
    IRBuilder<> B(C);
    std::vector<Value *> Args = {B.getInt64(Id), B.getInt32(0), Callee,
                                 B.getInt32(C->arg_size()), B.getInt32(0)};
    for (Value *A : C->args())
      Args.push_back(A);
    Args.push_back(B.getInt32(0));
    Args.push_back(B.getInt32(0));
    OperandBundleDef Bundle("deopt", std::vector<Value *>(Deopt.begin(), Deopt.end()));
    CallInst *SP = B.CreateCall(SPF, Args, {Bundle});
    SP->setCallingConv(C->getCallingConv());
    SP->setDebugLoc(C->getDebugLoc());
    std::vector<AttributeSet> ArgAttrs(5);
    for (unsigned I = 0; I < C->arg_size(); ++I)       // sret and the like matter to the ABI
      ArgAttrs.push_back(C->getAttributes().getParamAttrs(I).removeAttribute(
          Ctx, Attribute::Returned));
    SP->setAttributes(AttributeList::get(Ctx, AttributeSet(), AttributeSet(), ArgAttrs));
    if (!C->getType()->isVoidTy()) {
      Function *RF = Intrinsic::getDeclaration(&M, Intrinsic::experimental_gc_result,
                                               {C->getType()});
      CallInst *R = B.CreateCall(RF, {SP});
      R->setDebugLoc(C->getDebugLoc());
      C->replaceAllUsesWith(R);
      R->takeName(C);
    }
  }

  // For tests: the SSA values live after every call of every defined function, as given.
  void dumpLiveness() {
    for (Function &F : M) {
      if (F.isDeclaration())
        continue;
      Liveness L(F);
      ModuleSlotTracker MST(&M);
      MST.incorporateFunction(F);
      json::Array Calls;
      for (Instruction &I : instructions(F))
        if (auto *C = dyn_cast<CallBase>(&I)) {
          BitVector Live = L.liveAfter(C);
          json::Array Names;
          for (unsigned K : Live.set_bits()) {
            Value *V = L.value(K);
            if (V == C)
              continue;
            std::string S;
            raw_string_ostream OS(S);
            V->printAsOperand(OS, false, MST);
            Names.push_back(OS.str());
          }
          Calls.push_back(std::move(Names));
        }
      LiveAfterCalls[F.getName()] = std::move(Calls);
    }
  }

  void writeTable() {
    json::Array ReachingNames, ProblemList, ResolvedList;
    for (Function *F : Reaching)
      ReachingNames.push_back(F->getName());
    for (auto &P : Problems)
      ProblemList.push_back(P);
    for (auto &R : Resolved)
      ResolvedList.push_back(R);
    // Functions that never return (exit, abort, a usage() that exits): in machine code the
    // bytes after a call of one belong to another block (liveregs.py).
    std::set<std::string> NoReturn;
    for (Function &F : M) {
      if (F.doesNotReturn() && !F.isIntrinsic())
        NoReturn.insert(F.getName().str());
      for (Instruction &I : instructions(F))
        if (auto *C = dyn_cast<CallInst>(&I))
          if (Function *Callee = directCallee(C))
            if (C->doesNotReturn() && !Callee->isIntrinsic())
              NoReturn.insert(Callee->getName().str());
    }
    json::Array NoReturnList;
    for (const std::string &N : NoReturn)
      NoReturnList.push_back(N);
    json::Object Table{{"sites", std::move(Sites)},
                       {"reaching", std::move(ReachingNames)},
                       {"noreturn", std::move(NoReturnList)},
                       {"resolved_calls", std::move(ResolvedList)},
                       {"problems", std::move(ProblemList)}};
    if (Opts.DumpLiveness)
      Table["liveness"] = std::move(LiveAfterCalls);
    std::error_code EC;
    raw_fd_ostream OS(Opts.SitesPath, EC, sys::fs::OF_Text);
    if (EC)
      report_fatal_error("hexo-live: cannot write " + Twine(Opts.SitesPath) + ": " +
                         EC.message());
    OS << json::Value(std::move(Table)) << "\n";
  }
};

struct HexoLive : PassInfoMixin<HexoLive> {
  Options Opts;
  explicit HexoLive(Options O) : Opts(std::move(O)) {}
  PreservedAnalyses run(Module &M, ModuleAnalysisManager &) {
    LiveValuesPass(M, Opts).run();
    return PreservedAnalyses::none();
  }
};

bool parseOptions(StringRef Params, Options &O) {
  while (!Params.empty()) {
    StringRef P;
    std::tie(P, Params) = Params.split(';');
    if (P == "auto-points")
      O.AutoPoints = true;
    else if (P == "dump-liveness")
      O.DumpLiveness = true;
    else if (P.consume_front("sites="))
      O.SitesPath = P.str();
    else
      return false;
  }
  return !O.SitesPath.empty();
}

} // namespace

extern "C" LLVM_ATTRIBUTE_WEAK PassPluginLibraryInfo llvmGetPassPluginInfo() {
  return {LLVM_PLUGIN_API_VERSION, "hexo-live", "1", [](PassBuilder &PB) {
            PB.registerPipelineParsingCallback(
                [](StringRef Name, ModulePassManager &MPM, ArrayRef<PassBuilder::PipelineElement>) {
                  Options O;
                  if (!Name.consume_front("hexo-live"))
                    return false;
                  if (Name.consume_front("<") && Name.consume_back(">")) {
                    if (!parseOptions(Name, O))
                      return false;
                  } else {
                    return false;
                  }
                  MPM.addPass(HexoLive(std::move(O)));
                  return true;
                });
          }};
}
