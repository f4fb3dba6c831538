import Foundation
import Tensors

/// A ggml tensor type, as stored in a GGUF tensor info. Unknown ids are kept (so a file from a
/// newer llama.cpp still opens for its metadata) and only fail when their data is asked for.
package struct GGMLType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    package let rawValue: UInt32
    package init(rawValue: UInt32) { self.rawValue = rawValue }

    package static let f32 = GGMLType(rawValue: 0)
    package static let f16 = GGMLType(rawValue: 1)
    package static let q4_0 = GGMLType(rawValue: 2)
    package static let q4_1 = GGMLType(rawValue: 3)
    package static let q5_0 = GGMLType(rawValue: 6)
    package static let q5_1 = GGMLType(rawValue: 7)
    package static let q8_0 = GGMLType(rawValue: 8)
    package static let q2_K = GGMLType(rawValue: 10)
    package static let q3_K = GGMLType(rawValue: 11)
    package static let q4_K = GGMLType(rawValue: 12)
    package static let q5_K = GGMLType(rawValue: 13)
    package static let q6_K = GGMLType(rawValue: 14)
    package static let iq4_nl = GGMLType(rawValue: 20)
    package static let bf16 = GGMLType(rawValue: 30)

    /// (name, elements per block, bytes per block) by type id, from ggml's type traits.
    /// Ids 4, 5 and 31–33 were retired by ggml and stay unknown.
    private static let traits: [UInt32: (name: String, blockSize: Int, blockBytes: Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
        10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
        13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
        16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
        19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
        22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
        26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
        30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    ]

    /// ggml's name for the type ("Q4_1"), or "type #N" for an id this code does not know.
    package var name: String { Self.traits[rawValue]?.name ?? "type #\(rawValue)" }
    package var description: String { name }
    /// Elements per quantisation block (1 for plain types); nil when unknown.
    package var blockSize: Int? { Self.traits[rawValue]?.blockSize }
    /// Bytes per block; nil when unknown.
    package var blockBytes: Int? { Self.traits[rawValue]?.blockBytes }
}

/// Where one tensor lives in a GGUF file.
package struct GGUFTensorInfo: Sendable, Equatable {
    package let name: String
    /// Row-major shape, slowest dimension first ([rows, cols] for a matrix). GGUF stores the
    /// dimensions fastest-first; they are reversed here so shapes match Hugging Face's.
    package let shape: [Int]
    package let type: GGMLType
    /// Byte offset from the start of the data section.
    package let offset: Int
    /// Bytes of data; nil when the type is unknown.
    package let byteCount: Int?

    package var count: Int { shape.reduce(1, *) }
}

/// A memory-mapped GGUF file (versions 2 and 3): metadata, tensor directory, and tensor data
/// decoded to fp32 on request.
///
/// Everything read from the file is bounds-checked in `init`, so a truncated or corrupt file
/// fails there with a one-line `FormatError` rather than crashing later.
package final class GGUFFile: @unchecked Sendable {
    package let path: String
    package let version: Int
    package let metadata: [String: GGUFValue]
    /// Metadata keys in file order (the dictionary loses it).
    package let metadataKeys: [String]
    package let tensors: [String: GGUFTensorInfo]
    /// Tensor names in file order.
    package let tensorNames: [String]
    package let alignment: Int
    /// Absolute byte offset of the data section.
    package let dataOffset: Int
    package var fileSize: Int { file.size }

    private let file: MappedFile

    package init(url: URL) throws {
        path = url.path
        file = try MappedFile(url: url)
        var r = ByteReader(base: file.base, size: file.size, path: path)

        let magic = try r.bytes(4, "the magic number")
        guard Array(magic) == Array("GGUF".utf8) else {
            let shown = magic.map { String(format: "%02x", $0) }.joined(separator: " ")
            throw FormatError(path, "not a GGUF file (first bytes are \(shown), expected \"GGUF\")")
        }
        let v = try r.scalar(UInt32.self, "the version")
        guard v == 2 || v == 3 else {
            let hint = v == 1 ? "re-convert it with a current llama.cpp" :
                v.byteSwapped <= 3 ? "big-endian GGUF files are not supported" : "the file is corrupt"
            throw FormatError(path, "unsupported GGUF version \(v) (need 2 or 3); \(hint)")
        }
        version = Int(v)
        let tensorCount = try r.count(UInt64.self, "the tensor count", minBytesEach: 24)
        let kvCount = try r.count(UInt64.self, "the metadata count", minBytesEach: 13)

        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        keys.reserveCapacity(kvCount)
        for i in 0..<kvCount {
            let key = try r.string("the key of metadata entry \(i)")
            let kind = try r.scalar(UInt32.self, "the type of metadata \(key)")
            let value = try r.value(kind: kind, key: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw FormatError(path, "metadata key \(key) appears twice; the file is corrupt")
            }
            keys.append(key)
        }
        self.metadata = metadata
        metadataKeys = keys

        // GGUF wants the data section (and each tensor in it) aligned to general.alignment.
        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard let n = a.int, n > 0, n & (n - 1) == 0 else {
                throw FormatError(path, "general.alignment must be a power of two, found \(a)")
            }
            alignment = n
        }
        self.alignment = alignment

        var infos: [String: GGUFTensorInfo] = [:]
        var names: [String] = []
        names.reserveCapacity(tensorCount)
        for i in 0..<tensorCount {
            let info = try r.tensorInfo(index: i)
            guard infos.updateValue(info, forKey: info.name) == nil else {
                throw FormatError(path, "tensor \(info.name) appears twice; the file is corrupt")
            }
            guard info.offset % alignment == 0 else {
                throw FormatError(path, "tensor \(info.name) starts at data offset \(info.offset), which is not a multiple of the alignment \(alignment); the file is corrupt")
            }
            names.append(info.name)
        }
        tensors = infos
        tensorNames = names

        let start = (r.pos + alignment - 1) / alignment * alignment
        dataOffset = start
        for name in names {
            // Offsets are capped at 2^56 and sizes at 2^48 elements, so these sums cannot overflow.
            let info = infos[name]!
            let lo = start + info.offset, hi = lo + (info.byteCount ?? 0)
            guard hi <= file.size else {
                throw FormatError(path, "truncated: tensor \(name) needs bytes \(lo)..<\(hi) but the file has \(file.size) bytes; re-download it")
            }
        }
    }

    /// The tensor decoded to fp32, in its row-major shape.
    package func tensor(_ name: String) throws -> Tensor {
        let info = try self.info(name)
        guard GGUFQuant.canDequantize(info.type) else {
            throw FormatError(path, "tensor \(name) has type \(info.type.name), which cannot be decoded (supported: \(GGUFQuant.supported.map(\.name).joined(separator: ", ")))")
        }
        let t = Tensor(shape: info.shape)
        GGUFQuant.dequantize(info.type, from: file.base + dataOffset + info.offset, to: t.ptr, count: info.count)
        return t
    }

    package func info(_ name: String) throws -> GGUFTensorInfo {
        guard let info = tensors[name] else { throw FormatError(path, "no tensor named \(name)") }
        return info
    }

    /// The tensor's stored bytes (still quantised). The pointer is valid only inside `body`.
    package func withRawBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let info = try self.info(name)
        guard let n = info.byteCount else {
            throw FormatError(path, "tensor \(name) has unknown type \(info.type.name)")
        }
        return try withExtendedLifetime(file) {
            try body(UnsafeRawBufferPointer(start: file.base + dataOffset + info.offset, count: n))
        }
    }

    // Typed metadata lookups; nil when the key is absent or of another kind.
    package func string(_ key: String) -> String? { metadata[key]?.string }
    package func int(_ key: String) -> Int? { metadata[key]?.int }
    package func double(_ key: String) -> Double? { metadata[key]?.double }
}

/// A cursor over the mapped bytes. Every read checks the bounds first and names what it was
/// reading, so the error says where in the file the data ran out.
private struct ByteReader {
    let base: UnsafeRawPointer
    let size: Int
    let path: String
    var pos = 0

    /// Nested arrays deeper than this are treated as corruption (and keep recursion bounded).
    static let maxDepth = 8

    var remaining: Int { size - pos }

    mutating func need(_ n: Int, _ what: String) throws {
        guard n <= remaining else {
            throw FormatError(path, "truncated: \(what) needs bytes \(pos)..<\(pos + n) but the file has \(size) bytes; re-download it")
        }
    }

    mutating func scalar<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        try need(MemoryLayout<T>.size, what)
        defer { pos += MemoryLayout<T>.size }
        return T(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: T.self))
    }

    mutating func bytes(_ n: Int, _ what: String) throws -> UnsafeRawBufferPointer {
        try need(n, what)
        defer { pos += n }
        return UnsafeRawBufferPointer(start: base + pos, count: n)
    }

    /// A count that must fit in the rest of the file given each item takes at least
    /// `minBytesEach` bytes; this stops a corrupt count from driving a huge allocation.
    mutating func count<T: FixedWidthInteger>(_: T.Type, _ what: String, minBytesEach: Int) throws -> Int {
        let n = try scalar(T.self, what)
        guard n >= 0, UInt64(n) <= UInt64(remaining / max(minBytesEach, 1)) else {
            throw FormatError(path, "\(what) is \(n), more than the \(remaining) remaining bytes can hold; the file is truncated or corrupt")
        }
        return Int(n)
    }

    mutating func string(_ what: String) throws -> String {
        let n = try count(UInt64.self, "the length of \(what)", minBytesEach: 1)
        return String(decoding: try bytes(n, what), as: UTF8.self)
    }

    /// Bytes a value of the given kind occupies at minimum (its size, for fixed-size kinds).
    static func minSize(kind: UInt32) -> Int? {
        switch kind {
        case 0, 1, 7: return 1
        case 2, 3: return 2
        case 4, 5, 6: return 4
        case 10, 11, 12: return 8
        case 8: return 8        // length prefix
        case 9: return 12       // element kind + count
        default: return nil
        }
    }

    mutating func value(kind: UInt32, key: String, depth: Int) throws -> GGUFValue {
        let what = "metadata \(key)"
        switch kind {
        case 0: return .uint8(try scalar(UInt8.self, what))
        case 1: return .int8(try scalar(Int8.self, what))
        case 2: return .uint16(try scalar(UInt16.self, what))
        case 3: return .int16(try scalar(Int16.self, what))
        case 4: return .uint32(try scalar(UInt32.self, what))
        case 5: return .int32(try scalar(Int32.self, what))
        case 6: return .float32(Float(bitPattern: try scalar(UInt32.self, what)))
        case 7:
            let b = try scalar(UInt8.self, what)
            guard b <= 1 else { throw FormatError(path, "\(what) is a bool stored as \(b); the file is corrupt") }
            return .bool(b == 1)
        case 8: return .string(try string(what))
        case 9:
            guard depth < Self.maxDepth else {
                throw FormatError(path, "\(what) nests arrays more than \(Self.maxDepth) deep; the file is corrupt")
            }
            let elementKind = try scalar(UInt32.self, "the element type of \(what)")
            guard let minSize = Self.minSize(kind: elementKind) else {
                throw FormatError(path, "\(what) has unknown element type \(elementKind); the file is corrupt")
            }
            let n = try count(UInt64.self, "the length of \(what)", minBytesEach: minSize)
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try value(kind: elementKind, key: key, depth: depth + 1)) }
            return .array(items)
        case 10: return .uint64(try scalar(UInt64.self, what))
        case 11: return .int64(try scalar(Int64.self, what))
        case 12: return .float64(Double(bitPattern: try scalar(UInt64.self, what)))
        default:
            throw FormatError(path, "\(what) has unknown value type \(kind); the file is corrupt")
        }
    }

    /// ggml tensors have at most four dimensions.
    static let maxDims = 4

    mutating func tensorInfo(index: Int) throws -> GGUFTensorInfo {
        let name = try string("the name of tensor \(index)")
        let nDims = try scalar(UInt32.self, "the rank of tensor \(name)")
        guard nDims <= Self.maxDims else {
            throw FormatError(path, "tensor \(name) has \(nDims) dimensions (at most \(Self.maxDims)); the file is corrupt")
        }
        var dims: [Int] = []
        var elements = 1
        for _ in 0..<nDims {
            let d = try scalar(UInt64.self, "the shape of tensor \(name)")
            let product = elements.multipliedReportingOverflow(by: Int(clamping: d))
            // No real tensor comes near 2^48 elements; above that the size maths could overflow.
            guard d <= UInt64(1) << 48, !product.overflow, product.partialValue <= 1 << 48 else {
                throw FormatError(path, "tensor \(name) has an absurd dimension \(d); the file is corrupt")
            }
            elements = product.partialValue
            dims.append(Int(d))
        }
        let type = GGMLType(rawValue: try scalar(UInt32.self, "the type of tensor \(name)"))
        let offset = try scalar(UInt64.self, "the offset of tensor \(name)")
        // The end-of-file check comes once the data section start is known; this only keeps
        // the offset arithmetic from overflowing.
        guard offset <= UInt64(1) << 56 else {
            throw FormatError(path, "tensor \(name) has an absurd data offset \(offset); the file is corrupt")
        }
        var byteCount: Int? = nil
        if let blockSize = type.blockSize, let blockBytes = type.blockBytes {
            // Blocks never straddle rows, so the fastest dimension must be whole blocks.
            guard (dims.first ?? 1) % blockSize == 0 else {
                throw FormatError(path, "tensor \(name) has rows of \(dims.first ?? 1) values, not a multiple of the \(type.name) block size \(blockSize); the file is corrupt")
            }
            byteCount = elements / blockSize * blockBytes
        }
        return GGUFTensorInfo(name: name, shape: dims.reversed(), type: type, offset: Int(offset), byteCount: byteCount)
    }
}
