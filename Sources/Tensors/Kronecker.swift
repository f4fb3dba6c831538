import CKernels

/// Row vectors times a Kronecker product, y = x (L ⊗ R), without forming the n x n matrix.
///
/// With n = a b, a row x read as the (a, b) matrix X (x[i b + j] = X[i, j]) gives
/// (x (L ⊗ R))[k b + l] = Σ_ij X[i, j] L[i, k] R[j, l], i.e. Y = Lᵀ X R: a (a + b) multiply-adds
/// per entry instead of n. L: (a, a), R: (b, b), row-major. FlatQuant's online transforms are
/// such products with a, b near sqrt(n) (576 = 24 x 24, 1536 = 32 x 48).
///
/// X R for all rows at once is one GEMM over the (rows a, b) matrix; the Lᵀ side runs per row.
package struct KroneckerFactors: Sendable, Equatable {
    package let a: Int
    package let b: Int
    package var n: Int { a * b }

    package init(a: Int, b: Int) {
        precondition(a > 0 && b > 0, "Kronecker factors \(a) x \(b)")
        self.a = a
        self.b = b
    }

    /// The factor sizes for width n: a b = n with a <= b and a as close to sqrt(n) as can be
    /// (576 → 24 x 24, 1536 → 32 x 48, 64 → 8 x 8; a prime n → 1 x n).
    package static func balanced(_ n: Int) -> KroneckerFactors {
        precondition(n > 0, "Kronecker factors of \(n)")
        var a = Int(Double(n).squareRoot())
        while n % a != 0 { a -= 1 }
        return KroneckerFactors(a: a, b: n / a)
    }

    /// y = x (L ⊗ R) for `rows` rows of n. z: scratch of rows * n. y must not alias x or z.
    package func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int,
                       left: UnsafePointer<Float>, right: UnsafePointer<Float>, scratch z: UnsafeMutablePointer<Float>) {
        let a = a, b = b, n = n
        // Z = X R: (rows a, b) (b, b)
        Gemm.sgemm(m: rows * a, n: b, k: b, a: x, lda: b, b: right, ldb: b, c: z, ldc: b)
        // Y = Lᵀ Z per row: Y[k, :] = Σ_i L[i, k] Z[i, :]
        Threads.parallelFor(rows) { range in
            rqat_kron_mix(left, a, 1, z + range.lowerBound * n, y + range.lowerBound * n, a, b, range.count)
        }
    }

    /// The backward of `apply`: given x and dy = dL/dy, writes dx and ADDS dL/dL into dLeft and
    /// dL/dR into dRight. z, dz: scratch of rows * n each.
    ///   Z = X R, Y = Lᵀ Z:  dZ = L dY,  dL = Σ_rows Z dYᵀ,  dR = Σ_rows Xᵀ dZ,  dX = dZ Rᵀ.
    package func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int,
                          left: UnsafePointer<Float>, right: UnsafePointer<Float>,
                          dLeft: UnsafeMutablePointer<Float>?, dRight: UnsafeMutablePointer<Float>?,
                          scratch z: UnsafeMutablePointer<Float>, scratch2 dz: UnsafeMutablePointer<Float>) {
        let a = a, b = b, n = n
        Gemm.sgemm(m: rows * a, n: b, k: b, a: x, lda: b, b: right, ldb: b, c: z, ldc: b)
        // dZ[i, :] = Σ_k L[i, k] dY[k, :], and per-chunk partial sums of Z dYᵀ.
        let chunks = min(rows, max(1, Threads.count))
        var partial = [Float](repeating: 0, count: dLeft == nil ? 0 : chunks * a * a)
        partial.withUnsafeMutableBufferPointer { part in
            // An empty array may still have a base address: only a requested dL gets one.
            let partBase = dLeft == nil ? nil : part.baseAddress
            Threads.parallelFor(chunks) { chunkRange in
                for chunk in chunkRange {
                    let lo = rows * chunk / chunks, hi = rows * (chunk + 1) / chunks
                    // dZ[i, :] = Σ_k L[i, k] dY[k, :]
                    rqat_kron_mix(left, 1, a, dy + lo * n, dz + lo * n, a, b, hi - lo)
                    if let p = partBase { rqat_kron_outer_accumulate(z + lo * n, dy + lo * n, p + chunk * a * a, a, b, hi - lo) }
                }
            }
            if let dLeft, let p = partBase {
                for chunk in 0..<chunks { rqat_axpy(1, p + chunk * a * a, dLeft, a * a) }
            }
        }
        // dR += Xᵀ dZ over the (rows a, b) matrices; dX = dZ Rᵀ.
        if let dRight {
            Gemm.sgemm(transA: true, m: b, n: b, k: rows * a, a: x, lda: b, b: dz, ldb: b, beta: 1, c: dRight, ldc: b)
        }
        Gemm.sgemm(transB: true, m: rows * a, n: b, k: b, a: dz, lda: b, b: right, ldb: b, c: dx, ldc: b)
    }
}

/// Small dense matrices (the Kronecker factors): inverse and transpose.
package enum SmallMatrix {
    /// The inverse of the (n, n) row-major matrix m, by Gauss-Jordan elimination with partial
    /// pivoting in Double; nil when it is singular (a pivot below 1e-12 of the largest entry).
    package static func inverse(_ m: [Float], size n: Int) -> [Float]? {
        precondition(m.count == n * n, "SmallMatrix.inverse: \(m.count) entries for \(n) x \(n)")
        var w = m.map(Double.init)
        var inv = [Double](repeating: 0, count: n * n)
        for i in 0..<n { inv[i * n + i] = 1 }
        let scale = w.map(abs).max() ?? 0
        guard scale > 0 else { return nil }
        for col in 0..<n {
            var pivot = col
            for r in col + 1..<n where abs(w[r * n + col]) > abs(w[pivot * n + col]) { pivot = r }
            guard abs(w[pivot * n + col]) > 1e-12 * scale else { return nil }
            if pivot != col {
                for j in 0..<n {
                    w.swapAt(col * n + j, pivot * n + j)
                    inv.swapAt(col * n + j, pivot * n + j)
                }
            }
            let p = w[col * n + col]
            for j in 0..<n { w[col * n + j] /= p; inv[col * n + j] /= p }
            for r in 0..<n where r != col {
                let f = w[r * n + col]
                if f == 0 { continue }
                for j in 0..<n {
                    w[r * n + j] -= f * w[col * n + j]
                    inv[r * n + j] -= f * inv[col * n + j]
                }
            }
        }
        return inv.map(Float.init)
    }

    package static func transposed(_ m: [Float], size n: Int) -> [Float] {
        var t = m
        for i in 0..<n { for j in 0..<n { t[j * n + i] = m[i * n + j] } }
        return t
    }

    /// A random (n, n) orthogonal matrix, Haar distributed: Gram-Schmidt (in Double) on a
    /// Gaussian matrix's rows, which is its QR factor with R's diagonal made positive.
    package static func randomOrthogonal(size n: Int, rng: inout SeededRNG) -> [Float] {
        var q = (0..<n * n).map { _ in Double(rng.normal()) }
        for i in 0..<n {
            // Twice, for rows orthogonal to rounding ("twice is enough").
            for _ in 0..<2 {
                for k in 0..<i {
                    var dot = 0.0
                    for j in 0..<n { dot += q[i * n + j] * q[k * n + j] }
                    for j in 0..<n { q[i * n + j] -= dot * q[k * n + j] }
                }
            }
            var norm = 0.0
            for j in 0..<n { norm += q[i * n + j] * q[i * n + j] }
            norm = norm.squareRoot()
            for j in 0..<n { q[i * n + j] /= norm }
        }
        return q.map(Float.init)
    }

    /// a b for (n, n) matrices.
    package static func product(_ x: [Float], _ y: [Float], size n: Int) -> [Float] {
        var out = [Float](repeating: 0, count: n * n)
        for i in 0..<n { for k in 0..<n { let v = x[i * n + k]; for j in 0..<n { out[i * n + j] += v * y[k * n + j] } } }
        return out
    }
}
