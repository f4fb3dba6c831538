import COpenBLAS

/// Row-major GEMM through OpenBLAS: C = alpha * op(A) * op(B) + beta * C,
/// op(A): (m, k), op(B): (k, n), C: (m, n). Leading dimensions are row strides in elements.
package enum Gemm {
    package static func sgemm(transA: Bool = false, transB: Bool = false,
                             m: Int, n: Int, k: Int, alpha: Float = 1,
                             a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float = 0,
                             c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        cblas_sgemm(CblasRowMajor,
                    transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// The same product for `batch` independent matrices at fixed strides (attention heads).
    package static func batchedSgemm(batch: Int, transA: Bool = false, transB: Bool = false,
                                    m: Int, n: Int, k: Int, alpha: Float = 1,
                                    a: UnsafePointer<Float>, lda: Int, strideA: Int,
                                    b: UnsafePointer<Float>, ldb: Int, strideB: Int,
                                    beta: Float = 0,
                                    c: UnsafeMutablePointer<Float>, ldc: Int, strideC: Int) {
        for i in 0..<batch {
            sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                  a: a + i * strideA, lda: lda, b: b + i * strideB, ldb: ldb,
                  beta: beta, c: c + i * strideC, ldc: ldc)
        }
    }

    /// y = W x for row-major W: (rows, cols); one matrix-vector product.
    package static func sgemv(rows: Int, cols: Int, w: UnsafePointer<Float>, x: UnsafePointer<Float>,
                             beta: Float = 0, y: UnsafeMutablePointer<Float>) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(cols), 1, w, Int32(cols),
                    x, 1, beta, y, 1)
    }

    /// Convenience for tests and set-up: a new tensor op(A) * op(B) for 2-D tensors.
    package static func matmul(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false) -> Tensor {
        precondition(a.rank == 2 && b.rank == 2, "matmul takes 2-D tensors, got \(a.shape) and \(b.shape)")
        let m = transA ? a.shape[1] : a.shape[0]
        let k = transA ? a.shape[0] : a.shape[1]
        let kb = transB ? b.shape[1] : b.shape[0]
        let n = transB ? b.shape[0] : b.shape[1]
        precondition(k == kb, "matmul inner dimensions differ: \(a.shape) x \(b.shape)")
        let c = Tensor(shape: [m, n])
        sgemm(transA: transA, transB: transB, m: m, n: n, k: k,
              a: a.ptr, lda: a.shape[1], b: b.ptr, ldb: b.shape[1], c: c.ptr, ldc: n)
        return c
    }
}
