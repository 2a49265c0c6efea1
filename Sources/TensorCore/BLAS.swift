import CBLAS

/// `C[M,N] = alpha * op(A) * op(B) + beta * C`, row-major, via OpenBLAS `cblas_sgemm`.
///
/// `lda`, `ldb`, `ldc` are row strides in elements, so views into wider buffers
/// (one head's columns of a fused QKV matrix) need no copy.
@inline(__always)
public func sgemm(
    transA: Bool = false, transB: Bool = false,
    M: Int, N: Int, K: Int,
    alpha: Float = 1,
    A: UnsafePointer<Float>, lda: Int,
    B: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    C: UnsafeMutablePointer<Float>, ldc: Int
) {
    cblas_sgemm(
        CblasRowMajor,
        transA ? CblasTrans : CblasNoTrans,
        transB ? CblasTrans : CblasNoTrans,
        Int32(M), Int32(N), Int32(K),
        alpha, A, Int32(lda), B, Int32(ldb), beta, C, Int32(ldc))
}

/// Which OpenBLAS build and kernel this process runs, for `inspect` and the benchmark.
public enum BLASInfo {
    public static var coreName: String { String(cString: openblas_get_corename()) }
    public static var config: String { String(cString: openblas_get_config()) }
    public static var threads: Int { Int(openblas_get_num_threads()) }
}
