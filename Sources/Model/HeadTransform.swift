import Tensors

/// FlatQuant's per-head transforms after RoPE, in the inference decoder's frozen form, for a
/// `FlatQuantTransform` P = diag(s)(L ⊗ R) of size head_dim. The key transform turns every key
/// head k into k P and every query head q into q P⁻ᵀ, so q kᵀ is unchanged; the value transform
/// turns every value head v into v P, and o_proj's weight carries (I ⊗ P)⁻ᵀ. Either way the
/// cache quantizes the transformed heads. P⁻ᵀ = diag(1/s)(L⁻ᵀ ⊗ R⁻ᵀ) has P's own form, so both
/// run as `FrozenFlatQuantTransform`s, on copies of the parameters taken at init.
package struct FrozenHeadTransform {
    let forward: FrozenFlatQuantTransform
    let inverseTranspose: FrozenFlatQuantTransform

    /// A snapshot of `t` (its current parameters and inverse).
    package init(_ t: FlatQuantTransform) {
        let a = t.factors.a, b = t.factors.b
        forward = FrozenFlatQuantTransform(left: Tensor(shape: [a, a], values: t.left.value.array),
                                           right: Tensor(shape: [b, b], values: t.right.value.array),
                                           scale: Tensor(shape: [t.width], values: t.scale.value.array))
        inverseTranspose = FrozenFlatQuantTransform(left: Tensor(shape: [a, a], values: t.leftInverseT),
                                                    right: Tensor(shape: [b, b], values: t.rightInverseT),
                                                    scale: Tensor(shape: [t.width], values: t.scale.value.array.map { 1 / $0 }))
    }

    /// x: `heads` rows of D, in place: x P.
    package func apply(_ x: UnsafeMutablePointer<Float>, heads: Int) { forward.transform(x, rows: heads, width: forward.factors.n) }
    /// x: `heads` rows of D, in place: x P⁻ᵀ.
    package func applyInverseTranspose(_ x: UnsafeMutablePointer<Float>, heads: Int) {
        inverseTranspose.transform(x, rows: heads, width: inverseTranspose.factors.n)
    }
}
