// reidc_run: run one entry of a reidc artifact (a Relax VM library) with TVM's C++ runtime.
//
// Used by reidc to run aarch64 builds under qemu, and on a board without Python:
//   reidc_run LIB ENTRY OUTDIR [--repeat N] INPUT...
// INPUT is PATH:DTYPE:SHAPE with raw little-endian data, e.g. x.bin:float32:1x3x256x128.
// Every output tensor (a tuple is flattened depth-first) is written to OUTDIR/out<i>.bin and
// announced on stdout as `out<i> DTYPE SHAPE`; with --repeat N the entry is then timed N times
// and `time_ms MIN MEDIAN` and `threads N` (TVM's pool) are printed. TVM_NUM_THREADS (else
// OMP_NUM_THREADS) sets the threads; unset, every CPU the process may use (TVM alone takes half
// the logical CPUs on x86).
//
// Build (board or cross): g++ -std=c++17 -O2 reidc_run.cc -I<tvm_ffi>/include
//   -L<tvm/lib> -L<tvm_ffi/lib> -ltvm_runtime -ltvm_ffi -o reidc_run
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <sched.h>

#include <algorithm>
#include <cctype>
#include <iterator>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace ffi = tvm::ffi;

namespace {

struct CPUAlloc {
  void AllocData(DLTensor* t) { t->data = std::malloc(std::max<size_t>(ffi::GetDataSize(*t), 1)); }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

[[noreturn]] void Fail(const std::string& msg) {
  std::cerr << "reidc_run: " << msg << std::endl;
  std::exit(2);
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

DLDataType ParseDType(const std::string& s) {
  if (s == "float32") return {kDLFloat, 32, 1};
  if (s == "int32") return {kDLInt, 32, 1};
  if (s == "int64") return {kDLInt, 64, 1};
  if (s == "uint64") return {kDLUInt, 64, 1};
  Fail("unsupported input dtype " + s);
}

std::string DTypeName(DLDataType t) {
  const char* base = t.code == kDLFloat ? "float" : t.code == kDLUInt ? "uint" : "int";
  return std::string(base) + std::to_string(t.bits);
}

ffi::Tensor ReadInput(const std::string& spec) {
  // PATH:DTYPE:SHAPE (the path may not contain ':')
  std::vector<std::string> parts = Split(spec, ':');
  if (parts.size() != 3) Fail("input must be PATH:DTYPE:SHAPE, got " + spec);
  std::vector<int64_t> shape;
  for (const std::string& d : Split(parts[2], 'x')) shape.push_back(std::stoll(d));
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(shape.data(), shape.size()),
                                           ParseDType(parts[1]), DLDevice{kDLCPU, 0});
  size_t bytes = ffi::GetDataSize(t);
  std::ifstream f(parts[0], std::ios::binary);
  if (!f) Fail("cannot open " + parts[0]);
  f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes));
  if (static_cast<size_t>(f.gcount()) != bytes)
    Fail(parts[0] + ": expected " + std::to_string(bytes) + " bytes for " + parts[1] + " " + parts[2]);
  return t;
}

void Flatten(const ffi::Any& v, std::vector<ffi::Tensor>* out) {
  if (auto t = v.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = v.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& e : *arr) Flatten(e, out);
  } else {
    Fail("entry returned something that is neither a tensor nor a tuple of tensors");
  }
}

void WriteOutput(const ffi::Tensor& t, const std::string& dir, size_t i) {
  std::string name = "out" + std::to_string(i);
  std::ofstream f(dir + "/" + name + ".bin", std::ios::binary);
  if (!f) Fail("cannot write " + dir + "/" + name + ".bin");
  f.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(ffi::GetDataSize(t)));
  std::cout << name << " " << DTypeName(t.dtype()) << " ";
  for (int d = 0; d < t.ndim(); ++d) std::cout << (d ? "x" : "") << t.shape()[d];
  std::cout << "\n";
}

std::string Norm(const std::string& s) {
  std::string out;
  for (char c : s)
    if (c != '_' && c != '-' && c != '.') out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Linux hands a process the AMX tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM for
// XFEATURE_XTILEDATA, Linux 5.16+); the first tile instruction without it is SIGILL.
void RequestAmx() {
#if defined(__x86_64__) && defined(__linux__)
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) != 0)
    Fail("the artifact uses AMX tiles and Linux refused this process the tile state "
         "(arch_prctl ARCH_REQ_XCOMP_PERM needs Linux 5.16+): compile for a preset without AMX");
#endif
}

// The CPU features the artifact's manifest (beside LIB) says its code needs ("cpuinfo_flags"),
// checked against /proc/cpuinfo before the library is loaded: a missing one would be SIGILL
// mid-run. Read from the ARM "Features" line or the x86 "flags" line; skipped where there is
// neither, and for an ARM artifact on an x86 cpuinfo (qemu-user shows the host's). An artifact
// that needs AMX gets the tile state requested. REIDC_CPUINFO names another cpuinfo file.
void CheckCpu(const std::string& lib) {
  size_t slash = lib.find_last_of('/');
  std::ifstream m((slash == std::string::npos ? std::string() : lib.substr(0, slash + 1)) + "manifest.json");
  if (!m) return;
  std::string text((std::istreambuf_iterator<char>(m)), std::istreambuf_iterator<char>());
  size_t k = text.find("\"cpuinfo_flags\"");
  if (k == std::string::npos) return;
  size_t a = text.find('[', k), b = text.find(']', a);
  if (a == std::string::npos || b == std::string::npos) Fail("manifest.json: corrupt cpuinfo_flags");
  std::vector<std::string> need;
  for (size_t q = text.find('"', a); q != std::string::npos && q < b; q = text.find('"', q + 1)) {
    size_t e = text.find('"', q + 1);
    need.push_back(text.substr(q + 1, e - q - 1));
    q = e;
  }
  const char* path = std::getenv("REIDC_CPUINFO");  // tests point this at a board's cpuinfo
  std::ifstream c(path ? path : "/proc/cpuinfo");
  std::string line, have;
  bool x86 = false;
  while (std::getline(c, line)) {
    bool arm = line.rfind("Features", 0) == 0;
    if (arm || line.rfind("flags", 0) == 0) { have = line.substr(line.find(':') + 1); x86 = !arm; break; }
  }
  bool x86_artifact = text.find("\"arch\": \"x86_64\"") != std::string::npos;
  if (have.empty() || x86 != x86_artifact) return;
  std::vector<std::string> flags;
  std::stringstream ss(have);
  for (std::string f; ss >> f;) flags.push_back(Norm(f));
  std::string missing;
  for (const std::string& n : need)
    if (std::find(flags.begin(), flags.end(), Norm(n)) == flags.end()) missing += (missing.empty() ? "" : ", ") + n;
  if (!missing.empty())
    Fail("this CPU lacks " + missing + ", which " + lib + " needs (manifest.json); compile for this board's preset");
  for (const std::string& n : need)
    if (Norm(n) == "amxtile") RequestAmx();
}

// TVM's pool reads TVM_NUM_THREADS at the first parallel kernel; unset, on x86 it takes half the
// logical CPUs (one thread on a 2-core VM, 1.8x slower). Set here as compiler/runtime.py's
// tvm_threads() sets it: the user's TVM_NUM_THREADS, else OMP_NUM_THREADS, else every CPU the
// runner may use.
void UseEveryCpu() {
  for (const char* name : {"TVM_NUM_THREADS", "OMP_NUM_THREADS"}) {
    const char* value = std::getenv(name);
    if (value && std::atoi(value) > 0) {
      setenv("TVM_NUM_THREADS", std::to_string(std::atoi(value)).c_str(), 1);
      return;
    }
  }
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof cpus, &cpus) == 0)
    setenv("TVM_NUM_THREADS", std::to_string(std::max(1, CPU_COUNT(&cpus))).c_str(), 1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) Fail("usage: reidc_run LIB ENTRY OUTDIR [--repeat N] PATH:DTYPE:SHAPE...");
  UseEveryCpu();
  std::string lib = argv[1], entry = argv[2], outdir = argv[3];
  int repeat = 0;
  std::vector<ffi::Any> inputs;
  for (int i = 4; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      repeat = std::atoi(argv[++i]);
    } else {
      inputs.emplace_back(ReadInput(argv[i]));
    }
  }
  CheckCpu(lib);
  ffi::Module exec = ffi::Module::LoadFromFile(lib);
  ffi::Optional<ffi::Function> load = exec->GetFunction("vm_load_executable");
  if (!load) Fail(lib + " is not a Relax VM library (no vm_load_executable)");
  ffi::Module vm = (*load)().cast<ffi::Module>();
  // device type, device id, allocator (2 = pooled) for the kernels; the same for the host
  vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2, static_cast<int>(kDLCPU), 0, 2);
  ffi::Optional<ffi::Function> fn = vm->GetFunction(entry);
  if (!fn) Fail(lib + " has no entry " + entry);
  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  ffi::Any result;
  fn.value().CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
  std::vector<ffi::Tensor> outs;
  Flatten(result, &outs);
  for (size_t i = 0; i < outs.size(); ++i) WriteOutput(outs[i], outdir, i);
  if (repeat > 0) {
    std::vector<double> ms;
    for (int r = 0; r < repeat; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      fn.value().CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    std::cout << "time_ms " << ms.front() << " " << ms[ms.size() / 2] << "\n";
    if (auto threads = ffi::Function::GetGlobal("runtime.NumThreads"))
      std::cout << "threads " << (*threads)().cast<int>() << "\n";
  }
  return 0;
}
