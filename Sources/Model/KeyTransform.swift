import Tensors

/// FlatQuant's per-head key transform after RoPE: every key head k → k P and every query head
/// q → q P⁻ᵀ, so that q kᵀ is unchanged while the keys the cache quantizes are transformed
/// (P = diag(s)(L ⊗ R) of size head_dim, one per block, a `FlatQuantTransform`). This is the
/// inference decoder's frozen form, as explicit (D, D) matrices: it runs on decode threads
/// and keeps no scratch between calls.
package struct FrozenKeyTransform: Sendable {
    let size: Int
    let keyMatrix: [Float]      // P: (D, D)
    let queryMatrix: [Float]    // P⁻ᵀ: (D, D)

    /// A snapshot of `t` (its current parameters and inverse).
    package init(_ t: FlatQuantTransform) {
        size = t.width
        (keyMatrix, queryMatrix) = t.explicitMatrices()
    }

    /// q: `heads` rows of D, k: `kvHeads` rows of D, both in place.
    package func apply(query q: UnsafeMutablePointer<Float>, heads: Int, key k: UnsafeMutablePointer<Float>, kvHeads: Int) {
        let d = size
        withUnsafeTemporaryAllocation(of: Float.self, capacity: d) { buf in
            let y = buf.baseAddress!
            func multiply(_ x: UnsafeMutablePointer<Float>, _ m: UnsafePointer<Float>) {
                y.initialize(repeating: 0, count: d)
                for i in 0..<d {
                    let a = x[i], row = m + i * d
                    for j in 0..<d { y[j] += a * row[j] }
                }
                x.update(from: y, count: d)
            }
            queryMatrix.withUnsafeBufferPointer { mq in
                for h in 0..<heads { multiply(q + h * d, mq.baseAddress!) }
            }
            keyMatrix.withUnsafeBufferPointer { mk in
                for h in 0..<kvHeads { multiply(k + h * d, mk.baseAddress!) }
            }
        }
    }
}

extension FlatQuantTransform {
    /// P and P⁻ᵀ as explicit (n, n) row-major matrices: the transform of the identity's rows
    /// (row i of P is e_i P) and the weight side of them (row i of P⁻ᵀ is e_i P⁻ᵀ).
    package func explicitMatrices() -> (forward: [Float], inverseTranspose: [Float]) {
        let n = width
        let identity = Tensor(shape: [n, n])
        for i in 0..<n { identity.ptr[i * n + i] = 1 }
        let p = Tensor(shape: [n, n]), pit = Tensor(shape: [n, n])
        forward(identity.ptr, into: p.ptr, rows: n, width: n)
        transformWeight(identity.ptr, into: pit.ptr, rows: n)
        return (p.array, pit.array)
    }

}
