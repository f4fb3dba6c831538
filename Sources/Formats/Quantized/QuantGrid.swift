import Foundation

/// The integer grid of one group of weights: x ≈ scale * (q - zero), q in 0...maxCode.
///
/// Conventions follow GPTQ's reference quantizer (and so its packed format): the range always
/// includes 0 (min(x, 0) ... max(x, 0)); symmetric grids use zero = (maxCode + 1) / 2 and a
/// range of ±max|x|; an all-zero group gets the range -1...1 so the scale is never 0.
/// `shrink` < 1 clips the range (the MSE clip search tries several).
package struct QuantGrid: Equatable, Sendable {
    package var scale: Float
    package var zero: Float
    package let maxCode: Int

    package init(scale: Float, zero: Float, maxCode: Int) {
        self.scale = scale
        self.zero = zero
        self.maxCode = maxCode
    }

    /// The grid for values with this minimum and maximum.
    package init(min lo: Float, max hi: Float, bits: Int, symmetric: Bool, shrink: Float = 1) {
        maxCode = (1 << bits) - 1
        var xmin = Swift.min(lo, 0) * shrink, xmax = Swift.max(hi, 0) * shrink
        if symmetric {
            let m = Swift.max(abs(xmin), xmax)
            xmin = xmin < 0 ? -m : 0
            xmax = m
        }
        if xmin == 0 && xmax == 0 { xmin = -1; xmax = 1 }
        scale = (xmax - xmin) / Float(maxCode)
        zero = symmetric ? Float(maxCode + 1) / 2 : (-xmin / scale).rounded()
    }

    /// The grid of `count` values at `x` (contiguous).
    package init(values x: UnsafePointer<Float>, count: Int, bits: Int, symmetric: Bool, shrink: Float = 1) {
        var lo = Float.infinity, hi = -Float.infinity
        for i in 0..<count { lo = Swift.min(lo, x[i]); hi = Swift.max(hi, x[i]) }
        self.init(min: lo, max: hi, bits: bits, symmetric: symmetric, shrink: shrink)
    }

    /// The integer code of x (round to nearest, ties to even as torch.round; clamped).
    @inline(__always)
    package func code(_ x: Float) -> Int {
        let q = (x / scale).rounded(.toNearestOrEven) + zero
        return Int(Swift.min(Swift.max(q, 0), Float(maxCode)))
    }

    @inline(__always)
    package func dequantize(_ q: Int) -> Float { scale * (Float(q) - zero) }

    /// Quantize-dequantize in one step.
    @inline(__always)
    package func fakeQuantize(_ x: Float) -> Float { dequantize(code(x)) }
}
