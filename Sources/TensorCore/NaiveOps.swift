/// Reference implementations kept as test oracles for the BLAS-backed kernels.
public enum Naive {
    /// `C[M,N] = A[M,K] · B[K,N]`, all row-major and contiguous.
    public static func matmul(_ a: [Float], _ b: [Float], M: Int, N: Int, K: Int) -> [Float] {
        var c = [Float](repeating: 0, count: M * N)
        for i in 0..<M {
            for k in 0..<K {
                let aik = a[i * K + k]
                for j in 0..<N { c[i * N + j] += aik * b[k * N + j] }
            }
        }
        return c
    }
}
