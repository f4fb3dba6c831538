import Tensors

// One wire format for everything that crosses ranks: a `TensorFrame` is a typed, shaped array
// of values plus a caller-chosen `kind` tag. This file holds the in-memory type and the
// conversions between Swift values and payload bytes; `FrameCodec.swift` turns lists of frames
// into checksummed, optionally compressed messages. Layout and rationale: docs/WIRE.md.

#if _endian(big)
#error("frame payloads are little-endian and copied as host memory; big-endian hosts are not supported")
#endif

/// How a frame's values are stored in its payload (always little-endian).
package enum FrameDType: Equatable, Hashable, Sendable, CustomStringConvertible {
    case float32, float16, bfloat16
    case int32, uint8, uint16, uint32
    /// Unsigned codes of `bits` (1...8) bits each, packed LSB first into consecutive bytes.
    case packed(bits: Int)

    /// uint16 when every token id of the vocabulary fits in it, else uint32.
    package static func tokenIds(vocabSize: Int) -> FrameDType {
        vocabSize <= 1 << 16 ? .uint16 : .uint32
    }

    package var bitsPerValue: Int {
        switch self {
        case .float32, .int32, .uint32: return 32
        case .float16, .bfloat16, .uint16: return 16
        case .uint8: return 8
        case .packed(let bits): return bits
        }
    }

    /// Bytes per value for the byte-plane shuffle; packed codes count as bytes (nothing to
    /// transpose).
    package var elementBytes: Int { max(bitsPerValue / 8, 1) }

    /// Payload size of `count` values (packed codes round up to whole bytes).
    package func payloadBytes(count: Int) -> Int { (count * bitsPerValue + 7) / 8 }

    package var isFloatingPoint: Bool { self == .float32 || self == .float16 || self == .bfloat16 }

    /// The integers this dtype holds exactly (nil for the floating-point types).
    package var integerRange: ClosedRange<Int64>? {
        switch self {
        case .float32, .float16, .bfloat16: return nil
        case .int32: return Int64(Int32.min)...Int64(Int32.max)
        case .uint32: return 0...Int64(UInt32.max)
        case .uint16: return 0...Int64(UInt16.max)
        case .uint8: return 0...Int64(UInt8.max)
        case .packed(let bits): return 0...(Int64(1) << bits - 1)
        }
    }

    /// Throws `FrameValueError` naming the first value this dtype cannot hold (say a token id
    /// >= 65536 for uint16). The frame initialisers trap on such a value; call this first when
    /// the range is not known in advance.
    package func checkFits<Values: Sequence>(_ values: Values) throws where Values.Element: BinaryInteger {
        guard let range = integerRange else { throw FrameValueError(description: "\(self) frames hold no integers") }
        for (index, value) in values.enumerated() {
            guard let wide = Int64(exactly: value), range.contains(wide) else {
                throw FrameValueError(description: "value \(value) at index \(index) does not fit a \(self) frame "
                                      + "(\(range.lowerBound)...\(range.upperBound))")
            }
        }
    }

    package var description: String {
        switch self {
        case .float32: return "float32"
        case .float16: return "float16"
        case .bfloat16: return "bfloat16"
        case .int32: return "int32"
        case .uint8: return "uint8"
        case .uint16: return "uint16"
        case .uint32: return "uint32"
        case .packed(let bits): return "packed\(bits)"
        }
    }
}

/// A value outside the range of the frame's dtype.
package struct FrameValueError: UserFacingError, Equatable {
    package let description: String
}

/// A typed, shaped array that travels between ranks.
///
/// The payload is a `[UInt8]` rather than `Data`: it is contiguous, has no Foundation
/// dependency, always starts at index 0 (a `Data` slice does not), and `withUnsafeBytes` hands
/// the encoder and decoder a raw pointer without copying.
package struct TensorFrame: Equatable, Sendable {
    /// The message kind; its meaning is the caller's (the wire only carries it).
    package let kind: UInt16
    package let dtype: FrameDType
    package let shape: [Int]
    /// The uncompressed values, laid out as `dtype` says.
    package let payload: [UInt8]

    /// Frames have at most this many dimensions (the header stores the rank in one byte; the
    /// bound keeps a hostile header from claiming a huge shape).
    package static let maxRank = 8

    /// A frame from payload bytes already in `dtype`'s layout (for example packed weights).
    package init(kind: UInt16, dtype: FrameDType, shape: [Int], payload: [UInt8]) {
        precondition(shape.count <= Self.maxRank, "frame rank \(shape.count) exceeds \(Self.maxRank)")
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in frame shape \(shape)")
        if case .packed(let bits) = dtype { precondition((1...8).contains(bits), "packed codes have 1...8 bits, not \(bits)") }
        let count = shape.reduce(1, *)
        precondition(payload.count == dtype.payloadBytes(count: count),
                     "\(payload.count) payload bytes for \(count) \(dtype) values")
        self.kind = kind
        self.dtype = dtype
        self.shape = shape
        self.payload = payload
    }

    /// The number of values (the product of `shape`; 1 for a scalar).
    package var count: Int { shape.reduce(1, *) }

    /// Builds the payload in place: `fill` gets exactly `dtype.payloadBytes(count:)` bytes.
    private init(kind: UInt16, dtype: FrameDType, shape: [Int],
                 fill: (UnsafeMutableRawBufferPointer) -> Void) {
        let byteCount = dtype.payloadBytes(count: shape.reduce(1, *))
        let payload = [UInt8](unsafeUninitializedCapacity: byteCount) { bytes, initialized in
            fill(UnsafeMutableRawBufferPointer(bytes))
            initialized = byteCount
        }
        self.init(kind: kind, dtype: dtype, shape: shape, payload: payload)
    }

    private static func checkCount(_ valueCount: Int, _ shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 } && valueCount == shape.reduce(1, *),
                     "\(valueCount) values for frame shape \(shape)")
    }
}

// MARK: - Floating-point values

extension TensorFrame {
    /// Stores `floats` as float32 (exact), float16 or bfloat16 (rounded to nearest even, as
    /// `Half` does everywhere else).
    package init(kind: UInt16, floats: UnsafeBufferPointer<Float>, as dtype: FrameDType = .float32, shape: [Int]) {
        precondition(dtype.isFloatingPoint, "floats cannot be stored as \(dtype)")
        Self.checkCount(floats.count, shape)
        self.init(kind: kind, dtype: dtype, shape: shape) { bytes in
            guard let source = floats.baseAddress else { return }
            switch dtype {
            case .float32:
                bytes.copyMemory(from: UnsafeRawBufferPointer(floats))
            case .float16:
                bytes.withMemoryRebound(to: UInt16.self) { Half.convertToFP16(source, to: $0.baseAddress!, count: floats.count) }
            default:
                bytes.withMemoryRebound(to: UInt16.self) { Half.convertToBF16(source, to: $0.baseAddress!, count: floats.count) }
            }
        }
    }

    package init(kind: UInt16, floats: [Float], as dtype: FrameDType = .float32, shape: [Int]) {
        self = floats.withUnsafeBufferPointer { TensorFrame(kind: kind, floats: $0, as: dtype, shape: shape) }
    }

    /// A tensor's values with its shape.
    package init(kind: UInt16, tensor: Tensor, as dtype: FrameDType = .float32) {
        self.init(kind: kind, floats: UnsafeBufferPointer(tensor.buffer), as: dtype, shape: tensor.shape)
    }

    /// Writes the values as fp32 into `destination` (exactly `count` floats), decoding fp16/bf16.
    package func copyFloats(into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(dtype.isFloatingPoint, "a \(dtype) frame holds no floats")
        precondition(destination.count == count, "\(destination.count) floats of room for \(count) values")
        guard let out = destination.baseAddress else { return }
        payload.withUnsafeBytes { bytes in
            switch dtype {
            case .float32:
                UnsafeMutableRawPointer(out).copyMemory(from: bytes.baseAddress!, byteCount: count * 4)
            case .float16:
                bytes.withMemoryRebound(to: UInt16.self) { Half.convertFP16($0.baseAddress!, to: out, count: count) }
            default:
                bytes.withMemoryRebound(to: UInt16.self) { Half.convertBF16($0.baseAddress!, to: out, count: count) }
            }
        }
    }

    package func floats() -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            copyFloats(into: buffer)
            initialized = count
        }
    }

    package func tensor() -> Tensor {
        let t = Tensor(shape: shape)
        copyFloats(into: t.buffer)
        return t
    }
}

// MARK: - Integer values (token ids, counts)

extension TensorFrame {
    /// Stores integers as int32, uint8, uint16 or uint32. A value that does not fit the chosen
    /// type is a programming error and traps (an id >= 65536 in a uint16 frame: pick the type
    /// with `FrameDType.tokenIds(vocabSize:)`, or check with `FrameDType.checkFits` first).
    package init(kind: UInt16, ints: UnsafeBufferPointer<Int32>, as dtype: FrameDType, shape: [Int]) {
        switch dtype {
        case .int32, .uint32, .uint16, .uint8: break
        default: preconditionFailure("integers cannot be stored as \(dtype) (codes use init(kind:codes:bits:shape:))")
        }
        Self.checkCount(ints.count, shape)
        Self.trapUnlessFits(ints, dtype)
        self.init(kind: kind, dtype: dtype, shape: shape) { bytes in
            switch dtype {
            case .int32, .uint32:   // same bytes: every value is known to be >= 0 for uint32
                bytes.copyMemory(from: UnsafeRawBufferPointer(ints))
            case .uint16:
                bytes.withMemoryRebound(to: UInt16.self) { out in
                    for i in ints.indices { out[i] = UInt16(truncatingIfNeeded: ints[i]) }
                }
            default:
                bytes.withMemoryRebound(to: UInt8.self) { out in
                    for i in ints.indices { out[i] = UInt8(truncatingIfNeeded: ints[i]) }
                }
            }
        }
    }

    package init(kind: UInt16, ints: [Int32], as dtype: FrameDType, shape: [Int]) {
        self = ints.withUnsafeBufferPointer { TensorFrame(kind: kind, ints: $0, as: dtype, shape: shape) }
    }

    /// Token ids and lengths as the rest of the code holds them.
    package init(kind: UInt16, ints: [Int], as dtype: FrameDType, shape: [Int]) {
        Self.trapUnlessFits(ints, dtype)
        self.init(kind: kind, ints: ints.map { Int32(truncatingIfNeeded: $0) }, as: dtype, shape: shape)
    }

    private static func trapUnlessFits<Values: Sequence>(_ values: Values, _ dtype: FrameDType) where Values.Element: BinaryInteger {
        do { try dtype.checkFits(values) } catch { preconditionFailure("\(error)") }
    }

    /// The values of an int32, uint8, uint16 or uint32 frame. A uint32 value above Int32.max
    /// (never a token id) is a programming error.
    package func ints() -> [Int32] {
        payload.withUnsafeBytes { bytes in
            switch dtype {
            case .int32:
                return bytes.withMemoryRebound(to: Int32.self) { Array($0) }
            case .uint32:
                // Values above Int32.max (never encoded by rqat) come out negative, so a receiver's
                // range check (e.g. 0 <= id < vocab) rejects them instead of the process trapping.
                return bytes.withMemoryRebound(to: UInt32.self) { $0.map { Int32(truncatingIfNeeded: $0) } }
            case .uint16:
                return bytes.withMemoryRebound(to: UInt16.self) { $0.map { Int32($0) } }
            case .uint8:
                return bytes.map { Int32($0) }
            default:
                preconditionFailure("a \(dtype) frame holds no integers")
            }
        }
    }
}

// MARK: - Packed low-bit codes

extension TensorFrame {
    /// Packs unsigned codes (each < 2^bits) at `bits` bits per value: value i occupies bits
    /// i*bits ..< (i+1)*bits of the payload read as one little-endian bit string (LSB first, the
    /// GPTQ order). Unused high bits of the last byte are zero. A code >= 2^bits traps (see
    /// `FrameDType.checkFits`).
    package init(kind: UInt16, codes: UnsafeBufferPointer<UInt8>, bits: Int, shape: [Int]) {
        precondition((1...8).contains(bits), "packed codes have 1...8 bits, not \(bits)")
        Self.checkCount(codes.count, shape)
        Self.trapUnlessFits(codes, .packed(bits: bits))
        self.init(kind: kind, dtype: .packed(bits: bits), shape: shape) { bytes in
            var pending: UInt32 = 0   // bits not yet written, lowest first
            var pendingCount = 0
            var next = 0
            for code in codes {
                pending |= UInt32(code) << pendingCount
                pendingCount += bits
                while pendingCount >= 8 {
                    bytes[next] = UInt8(truncatingIfNeeded: pending)
                    next += 1
                    pending >>= 8
                    pendingCount -= 8
                }
            }
            if pendingCount > 0 { bytes[next] = UInt8(truncatingIfNeeded: pending) }
        }
    }

    package init(kind: UInt16, codes: [UInt8], bits: Int, shape: [Int]) {
        self = codes.withUnsafeBufferPointer { TensorFrame(kind: kind, codes: $0, bits: bits, shape: shape) }
    }

    /// The codes of a packed frame, one per byte (a uint8 frame's values as they are).
    package func codes() -> [UInt8] {
        let bits: Int
        switch dtype {
        case .uint8: return payload
        case .packed(let b): bits = b
        default: preconditionFailure("a \(dtype) frame holds no codes")
        }
        let mask = UInt32(1) << bits - 1
        return [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
            var pending: UInt32 = 0
            var pendingCount = 0
            var next = 0
            for i in 0..<count {
                if pendingCount < bits {
                    pending |= UInt32(payload[next]) << pendingCount
                    next += 1
                    pendingCount += 8
                }
                out[i] = UInt8(truncatingIfNeeded: pending & mask)
                pending >>= bits
                pendingCount -= bits
            }
            initialized = count
        }
    }
}
