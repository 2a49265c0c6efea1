import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Picks OpenBLAS's fast kernels on CPUs that Debian's OpenBLAS 0.3.21 does not recognise.
///
/// OpenBLAS chooses its kernel once, when the library loads, from `OPENBLAS_CORETYPE` or
/// its own CPU probe; on recent AMD and Intel parts the probe falls back to slow generic
/// kernels. The variable must therefore be set before the process starts: when it is
/// unset, `reexecWithFastKernelsIfNeeded` sets it from the CPU's features and re-executes
/// the same binary once. A value the user set is always kept.
public enum OpenBLASEnvironment {
    /// The kernel to ask for on this CPU, from /proc/cpuinfo's flags.
    public static func preferredCoreType(cpuinfo: String) -> String? {
        guard let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else {
            return nil
        }
        let flags = Set(flagsLine.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" }).map(String.init))
        if flags.contains("avx512f") && flags.contains("avx512bw") && flags.contains("avx512vl") { return "SkylakeX" }
        if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
        return nil
    }

    /// Call first thing in `main`. Returns only if no re-exec was needed or it failed.
    public static func reexecWithFastKernelsIfNeeded() {
        #if os(Linux)
        guard getenv("OPENBLAS_CORETYPE") == nil, getenv("LNLENS_NO_REEXEC") == nil else { return }
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let core = preferredCoreType(cpuinfo: info) else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv("LNLENS_NO_REEXEC", "1", 1)  // never loop, whatever happens
        let args = CommandLine.arguments
        var cArgs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        cArgs.append(nil)
        execv("/proc/self/exe", &cArgs)
        // execv returned: keep running with the generic kernels.
        #endif
    }
}
