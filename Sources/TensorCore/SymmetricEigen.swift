import CBLAS

/// `G (n, n) += Aᵀ A` for `A (k, n)` row-major, in double (the upper triangle; `symmetrize`
/// copies it down): the Gram matrix of A's columns, accumulated block by block.
public func gramAccumulate(_ g: inout [Double], a: [Double], rows k: Int, n: Int) {
    precondition(g.count == n * n && a.count == k * n)
    guard k > 0 else { return }
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(k), 1, a, Int32(n), 1, &g, Int32(n))
}

/// Copies the upper triangle of `g (n, n)` into its lower one.
public func symmetrize(_ g: inout [Double], n: Int) {
    for i in 0..<n { for j in 0..<i { g[i * n + j] = g[j * n + i] } }
}

/// `C (m, n) = A (m, k) · B (k, n)`, row-major, in double.
public func dgemm(_ a: [Double], _ b: [Double], m: Int, k: Int, n: Int) -> [Double] {
    var c = [Double](repeating: 0, count: m * n)
    guard m > 0 && n > 0 && k > 0 else { return c }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k), b, Int32(n), 0, &c, Int32(n))
    return c
}

/// The eigenvalues of the symmetric `g (n, n)` (its upper triangle is read) in ascending order and
/// their unit eigenvectors, `vectors[i · n + j]` = component i of eigenvector j (LAPACK's dsyevd).
/// nil when LAPACK reports a failure.
public func symmetricEigen(_ g: [Double], n: Int) -> (values: [Double], vectors: [Double])? {
    // LAPACK is column-major: the row-major upper triangle is its lower one.
    var a = g, w = [Double](repeating: 0, count: n)
    var nn = Int32(n), lda = Int32(max(1, n)), info: Int32 = 0
    var lwork: Int32 = -1, liwork: Int32 = -1, workSize = 0.0, iworkSize: Int32 = 0
    let jobz = "V", uplo = "L"
    dsyevd_(jobz, uplo, &nn, &a, &lda, &w, &workSize, &lwork, &iworkSize, &liwork, &info)
    guard info == 0 else { return nil }
    lwork = Int32(workSize)
    liwork = iworkSize
    var work = [Double](repeating: 0, count: Int(lwork)), iwork = [Int32](repeating: 0, count: Int(liwork))
    dsyevd_(jobz, uplo, &nn, &a, &lda, &w, &work, &lwork, &iwork, &liwork, &info)
    guard info == 0 else { return nil }
    // Column-major eigenvector j (a[j · n + i]) to row-major vectors[i · n + j].
    var vectors = [Double](repeating: 0, count: n * n)
    for j in 0..<n { for i in 0..<n { vectors[i * n + j] = a[j * n + i] } }
    return (w, vectors)
}
