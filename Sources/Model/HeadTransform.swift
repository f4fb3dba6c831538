import Tensors

/// FlatQuant's per-head transforms after RoPE, in the inference decoder's frozen form: an
/// explicit (D, D) P and P⁻ᵀ of a `FlatQuantTransform` of size head_dim (diag(s)(L ⊗ R)). The
/// key transform turns every key head k into k P and every query head q into q P⁻ᵀ, so q kᵀ is
/// unchanged; the value transform turns every value head v into v P, and o_proj's weight
/// carries (I ⊗ P)⁻ᵀ. Either way the cache quantizes the transformed heads. Runs on decode
/// threads and keeps no scratch between calls.
package struct FrozenHeadTransform: Sendable {
    let size: Int
    let forwardMatrix: [Float]           // P: (D, D)
    let inverseTransposeMatrix: [Float]  // P⁻ᵀ: (D, D)

    /// A snapshot of `t` (its current parameters and inverse).
    package init(_ t: FlatQuantTransform) {
        size = t.width
        (forwardMatrix, inverseTransposeMatrix) = t.explicitMatrices()
    }

    /// x: `heads` rows of D, in place: x P.
    package func apply(_ x: UnsafeMutablePointer<Float>, heads: Int) { multiply(x, heads, forwardMatrix) }
    /// x: `heads` rows of D, in place: x P⁻ᵀ.
    package func applyInverseTranspose(_ x: UnsafeMutablePointer<Float>, heads: Int) { multiply(x, heads, inverseTransposeMatrix) }

    private func multiply(_ x: UnsafeMutablePointer<Float>, _ heads: Int, _ matrix: [Float]) {
        let d = size
        withUnsafeTemporaryAllocation(of: Float.self, capacity: d) { buf in
            let y = buf.baseAddress!
            matrix.withUnsafeBufferPointer { m in
                for h in 0..<heads {
                    let row = x + h * d
                    y.initialize(repeating: 0, count: d)
                    for i in 0..<d {
                        let a = row[i], mi = m.baseAddress! + i * d
                        for j in 0..<d { y[j] += a * mi[j] }
                    }
                    row.update(from: y, count: d)
                }
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
