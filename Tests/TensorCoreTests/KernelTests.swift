import Foundation
import Testing
import TensorCore

/// The BLAS-backed kernels against their naive references, and the OpenBLAS kernel choice.
@Suite struct KernelTests {
    static func values(_ n: Int, seed: UInt64) -> [Float] {
        var s = seed
        return (0..<n).map { _ in
            s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int64(bitPattern: s >> 11) % 2001 - 1000) / 1000
        }
    }

    @Test(arguments: [(1, 1, 1), (3, 5, 7), (17, 33, 64), (128, 96, 40)])
    func sgemmMatchesNaiveMatmul(shape: (Int, Int, Int)) {
        let (M, N, K) = shape
        let a = Self.values(M * K, seed: 1), b = Self.values(K * N, seed: 2)
        var c = [Float](repeating: 0, count: M * N)
        sgemm(M: M, N: N, K: K, A: a, lda: K, B: b, ldb: N, C: &c, ldc: N)
        let ref = Naive.matmul(a, b, M: M, N: N, K: K)
        let diff = zip(c, ref).map { abs($0 - $1) }.max() ?? 0
        #expect(diff < 1e-4, "max |diff| \(diff)")
    }

    @Test func matmulBiasAddsTheBiasToEveryRow() {
        let x = Self.values(4 * 3, seed: 3), w = Self.values(3 * 5, seed: 4), bias = Self.values(5, seed: 5)
        let out = matmulBias(x, w, bias, rows: 4, inner: 3, cols: 5)
        let ref = Naive.matmul(x, w, M: 4, N: 5, K: 3)
        for r in 0..<4 { for c in 0..<5 { #expect(abs(out[r * 5 + c] - ref[r * 5 + c] - bias[c]) < 1e-5) } }
    }

    @Test func softmaxRowsSumToOneAndIgnoreMaskedEntries() {
        let x: [Float] = [1, 2, -.infinity, 0.5, -.infinity, -.infinity]
        let p = softmaxRows(x, rows: 2, cols: 3)
        #expect(abs(p[0] + p[1] - 1) < 1e-6 && p[2] == 0)
        #expect(p[3] == 1 && p[4] == 0 && p[5] == 0)
        #expect(softmaxRows([-.infinity, -.infinity], rows: 1, cols: 2) == [0, 0])
    }

    /// gelu_new's tanh form, computed here in Double as the reference.
    @Test func geluNewMatchesTheTanhFormula() {
        let x = Self.values(100_000, seed: 6).map { $0 * 8 }
        let y = geluNew(x)
        var worst: Double = 0
        for (v, g) in zip(x, y) {
            let d = Double(v)
            let ref = 0.5 * d * (1 + tanh((2 / Double.pi).squareRoot() * (d + 0.044715 * d * d * d)))
            worst = max(worst, abs(ref - Double(g)))
        }
        #expect(worst < 1e-5, "max |diff| \(worst)")
    }

    @Test func coreTypeFromCPUFlags() {
        #expect(OpenBLASEnvironment.preferredCoreType(cpuinfo: "flags\t\t: fpu sse avx2 fma avx512f avx512bw avx512vl\n") == "SkylakeX")
        #expect(OpenBLASEnvironment.preferredCoreType(cpuinfo: "flags\t\t: fpu sse avx2 fma\n") == "Haswell")
        #expect(OpenBLASEnvironment.preferredCoreType(cpuinfo: "flags\t\t: fpu sse sse2\n") == nil)
        #expect(OpenBLASEnvironment.preferredCoreType(cpuinfo: "") == nil)
    }
}
