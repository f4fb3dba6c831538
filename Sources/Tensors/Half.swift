/// Conversions between fp32 and the 16-bit formats found in checkpoints.
///
/// fp16 uses Swift's `Float16` (IEEE binary16). bf16 is the upper half of an fp32; rounding to it
/// is round-to-nearest-even, and NaN stays NaN (a quiet NaN with the sign kept).
package enum Half {
    @inline(__always)
    package static func float(fromFP16 bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

    @inline(__always)
    package static func fp16Bits(_ x: Float) -> UInt16 { Float16(x).bitPattern }

    @inline(__always)
    package static func float(fromBF16 bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    @inline(__always)
    package static func bf16Bits(_ x: Float) -> UInt16 {
        let u = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: u >> 16) | 0x0040 }
        let roundingBias: UInt32 = 0x7FFF + ((u >> 16) & 1)
        return UInt16(truncatingIfNeeded: (u &+ roundingBias) >> 16)
    }

    /// Converts `count` fp16 values to fp32.
    package static func convertFP16(_ src: UnsafePointer<UInt16>, to dst: UnsafeMutablePointer<Float>, count: Int) {
        src.withMemoryRebound(to: Float16.self, capacity: count) { h in
            for i in 0..<count { dst[i] = Float(h[i]) }
        }
    }

    package static func convertBF16(_ src: UnsafePointer<UInt16>, to dst: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { dst[i] = Float(bitPattern: UInt32(src[i]) << 16) }
    }

    package static func convertToFP16(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<UInt16>, count: Int) {
        for i in 0..<count { dst[i] = Float16(src[i]).bitPattern }
    }

    package static func convertToBF16(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<UInt16>, count: Int) {
        for i in 0..<count { dst[i] = bf16Bits(src[i]) }
    }
}
