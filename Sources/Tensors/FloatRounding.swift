/// Element kernels the fake quantizers share (weights in Quant, activations in Model).
package enum FloatRounding {
    /// round-half-to-even for |x| < 2^22 without a libm call (baseline x86-64 has no vector
    /// round instruction, and `rounded(.toNearestOrEven)` becomes a call per element). Larger
    /// magnitudes stay large, so they are clamped all the same.
    @inline(__always)
    package static func roundEven(_ x: Float) -> Float {
        let magic: Float = 12_582_912  // 1.5 * 2^23
        return (x + magic) - magic
    }

    /// The smallest and the largest of n values (four running pairs, for the vectorizer).
    @inline(__always)
    package static func minMax(_ x: UnsafePointer<Float>, count n: Int) -> (Float, Float) {
        var l0 = Float.infinity, l1 = Float.infinity, l2 = Float.infinity, l3 = Float.infinity
        var h0 = -Float.infinity, h1 = -Float.infinity, h2 = -Float.infinity, h3 = -Float.infinity
        var i = 0
        while i + 4 <= n {
            l0 = min(l0, x[i]); l1 = min(l1, x[i + 1]); l2 = min(l2, x[i + 2]); l3 = min(l3, x[i + 3])
            h0 = max(h0, x[i]); h1 = max(h1, x[i + 1]); h2 = max(h2, x[i + 2]); h3 = max(h3, x[i + 3])
            i += 4
        }
        while i < n { l0 = min(l0, x[i]); h0 = max(h0, x[i]); i += 1 }
        return (min(min(l0, l1), min(l2, l3)), max(max(h0, h1), max(h2, h3)))
    }
}
