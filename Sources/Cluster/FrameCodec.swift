import Tensors
import CKernels
import CZstd
import Foundation

// Messages on the wire: a list of `TensorFrame`s as one checksummed byte buffer, each frame's
// payload optionally compressed. The byte layout is specified in docs/WIRE.md; the constants
// below are the single place the code spells it out.

/// How frame payloads are compressed. Every frame of a message is encoded the same way, except
/// that a payload which does not shrink is sent raw (the header records what was done).
package enum FrameCodec: Equatable, Sendable {
    case raw
    /// zstd at `level` (ZSTD_minCLevel()...ZSTD_maxCLevel(), i.e. up to 22; 3, zstd's own
    /// default, balances speed and size).
    case zstd(level: Int = 3)
    /// Byte planes first (all byte 0s of the values, then all byte 1s, ...), then zstd: the
    /// repetitive sign/exponent bytes of fp16/fp32 values become long runs zstd can use.
    case shuffledZstd(level: Int = 3)
}

/// A message that cannot be decoded. Names the sending rank and what is wrong; decoding never
/// crashes on bad bytes and never returns frames from a message that failed a check.
package struct FrameError: UserFacingError, Equatable {
    package let rank: Int
    package let problem: String

    package init(rank: Int, problem: String) {
        self.rank = rank
        self.problem = problem
    }

    package var description: String { "frame from rank \(rank): \(problem)" }
}

extension TensorFrame {
    /// The frames as one message buffer (see docs/WIRE.md).
    package static func encodeMessage(_ frames: [TensorFrame], codec: FrameCodec) -> [UInt8] {
        precondition(frames.count <= Int(UInt16.max), "\(frames.count) frames exceed one message's \(UInt16.max)")
        var message = [UInt8]()
        message.reserveCapacity(Wire.messageHeaderSize
                                + frames.reduce(0) { $0 + Wire.frameHeaderSize(rank: $1.shape.count) + $1.payload.count })
        message.appendLittleEndian(Wire.messageMagic)
        message.appendLittleEndian(Wire.formatVersion)
        message.appendLittleEndian(UInt16(frames.count))
        message.appendLittleEndian(UInt64(0))   // message size, known at the end
        message.appendLittleEndian(UInt32(0))   // header checksum, idem
        for frame in frames { appendFrame(frame, codec: codec, to: &message) }
        message.storeLittleEndian(UInt64(message.count), at: Wire.messageSizeOffset)
        let checksum = message.withUnsafeBytes { rqat_crc32c(0, $0.baseAddress, Wire.messageChecksumOffset) }
        message.storeLittleEndian(checksum, at: Wire.messageChecksumOffset)
        return message
    }

    /// Bytes `encodeMessage` produces for these frames (for `rqat bench wire`).
    package static func encodedSize(_ frames: [TensorFrame], codec: FrameCodec) -> Int {
        encodeMessage(frames, codec: codec).count
    }

    /// The frames of a message received from `rank` (which only serves to name the sender in
    /// errors). Every length is checked against the bytes that arrived before it is used, and
    /// every frame's checksum before its payload is decompressed.
    package static func decodeMessage(_ bytes: UnsafeRawBufferPointer, from rank: Int) throws -> [TensorFrame] {
        try MessageDecoder(bytes: bytes, rank: rank).decode()
    }

    package static func decodeMessage(_ bytes: [UInt8], from rank: Int) throws -> [TensorFrame] {
        try bytes.withUnsafeBytes { try decodeMessage($0, from: rank) }
    }

    private static func appendFrame(_ frame: TensorFrame, codec: FrameCodec, to message: inout [UInt8]) {
        let (codecTag, encodedPayload) = encodePayload(frame, codec: codec)
        let start = message.count
        message.appendLittleEndian(Wire.frameMagic)
        message.appendLittleEndian(Wire.formatVersion)
        message.appendLittleEndian(frame.kind)
        message.append(Wire.dtypeCode(frame.dtype))
        message.append(Wire.bitsField(frame.dtype))
        message.append(codecTag.rawValue)
        message.append(UInt8(frame.shape.count))
        message.appendLittleEndian(UInt32(0))   // checksum, computed over the finished frame
        message.appendLittleEndian(UInt64(frame.payload.count))
        message.appendLittleEndian(UInt64(encodedPayload.count))
        for dimension in frame.shape { message.appendLittleEndian(UInt64(dimension)) }
        message.append(contentsOf: encodedPayload)
        let checksum = message.withUnsafeBytes { Wire.frameChecksum(UnsafeRawBufferPointer(rebasing: $0[start...])) }
        message.storeLittleEndian(checksum, at: start + Wire.frameChecksumOffset)
    }

    /// The payload as it goes on the wire, and the codec actually used for it.
    private static func encodePayload(_ frame: TensorFrame, codec: FrameCodec) -> (Wire.CodecTag, [UInt8]) {
        let compressed: [UInt8]
        let tag: Wire.CodecTag
        switch codec {
        case .raw:
            return (.raw, frame.payload)
        case .zstd(let level):
            compressed = frame.payload.withUnsafeBytes { Zstd.compress($0, level: level) }
            tag = .zstd
        case .shuffledZstd(let level):
            let planes = ByteShuffle.planes(frame.payload, elementBytes: frame.dtype.elementBytes)
            compressed = planes.withUnsafeBytes { Zstd.compress($0, level: level) }
            tag = .shuffledZstd
        }
        // zstd adds a header of its own; incompressible or tiny payloads travel raw.
        return compressed.count < frame.payload.count ? (tag, compressed) : (.raw, frame.payload)
    }
}

// MARK: - Decoding

/// Reads one message; `bytes` is everything that arrived, nothing is trusted before it is
/// checked.
private struct MessageDecoder {
    let bytes: UnsafeRawBufferPointer
    let rank: Int

    func decode() throws -> [TensorFrame] {
        guard bytes.count >= Wire.messageHeaderSize else {
            throw error("truncated (a message header is \(Wire.messageHeaderSize) bytes, \(bytes.count) arrived)")
        }
        guard u32(at: 0) == Wire.messageMagic else { throw error("bad magic (not an rqat message; mixed versions?)") }
        try checkVersion(at: 4, of: "message")
        guard rqat_crc32c(0, bytes.baseAddress, Wire.messageChecksumOffset) == u32(at: Wire.messageChecksumOffset) else {
            throw error("checksum mismatch in the message header (corrupt data on the wire)")
        }
        let declaredSize = u64(at: Wire.messageSizeOffset)
        guard declaredSize <= UInt64(bytes.count) else {
            throw error("truncated (header says \(declaredSize) message bytes, \(bytes.count) arrived)")
        }
        guard declaredSize == UInt64(bytes.count) else {
            throw error("\(UInt64(bytes.count) - declaredSize) bytes past the end of the message (header says \(declaredSize))")
        }
        let frameCount = Int(u16(at: 6))
        var frames: [TensorFrame] = []
        frames.reserveCapacity(frameCount)
        var offset = Wire.messageHeaderSize
        for index in 0..<frameCount {
            let (frame, end) = try decodeFrame(at: offset, name: "frame \(index + 1) of \(frameCount)")
            frames.append(frame)
            offset = end
        }
        guard offset == bytes.count else {
            throw error("\(bytes.count - offset) bytes after the last of \(frameCount) frames")
        }
        return frames
    }

    /// The frame starting at `start` and the offset just past it.
    private func decodeFrame(at start: Int, name: String) throws -> (TensorFrame, Int) {
        // The message header vouched for the size that arrived and for the format version, so a
        // frame running past the end has a corrupt length; find the end from the unchecked
        // lengths, bounding them first, and let the checksum judge the rest.
        let remaining = bytes.count - start
        guard remaining >= Wire.frameHeaderSize(rank: 0) else {
            throw error("\(name) runs past the end of the message (\(remaining) bytes remain for a "
                        + "\(Wire.frameHeaderSize(rank: 0))-byte header; corrupt data on the wire)")
        }
        let rank = Int(bytes[start + 11])
        let headerSize = Wire.frameHeaderSize(rank: rank)
        let encodedSize = u64(at: start + 24)
        guard headerSize <= remaining, encodedSize <= UInt64(remaining - headerSize) else {
            throw error("\(name) runs past the end of the message (header says \(encodedSize) payload bytes, "
                        + "\(max(remaining - headerSize, 0)) remain; corrupt data on the wire)")
        }
        let end = start + headerSize + Int(encodedSize)
        let frameBytes = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
        guard Wire.frameChecksum(frameBytes) == u32(at: start + Wire.frameChecksumOffset) else {
            throw error("checksum mismatch in \(name) (corrupt data on the wire)")
        }
        guard u32(at: start) == Wire.frameMagic else { throw error("bad magic in \(name) (not an rqat frame)") }
        try checkVersion(at: start + 4, of: name)

        // The header is now what the sender wrote; anything wrong below is a sender bug or a
        // different build.
        let dtype = try decodeDType(code: bytes[start + 8], bits: bytes[start + 9], name: name)
        guard let codec = Wire.CodecTag(rawValue: bytes[start + 10]) else {
            throw error("unknown codec \(bytes[start + 10]) in \(name)")
        }
        guard rank <= TensorFrame.maxRank else { throw error("\(name) has rank \(rank), more than \(TensorFrame.maxRank)") }
        var shape: [Int] = []
        var count = 1
        for axis in 0..<rank {
            let dimension = u64(at: start + Wire.frameShapeOffset + 8 * axis)
            let product = count.multipliedReportingOverflow(by: Int(clamping: dimension))
            guard dimension <= UInt64(Int.max), !product.overflow else {
                throw error("\(name) has an impossible shape (dimension \(dimension))")
            }
            shape.append(Int(dimension))
            count = product.partialValue
        }
        // Keeps `payloadBytes` (count * bits + 7, bits <= 32) from overflowing.
        guard count <= (Int.max - 7) / 32 else { throw error("\(name) has an impossible shape \(shape)") }
        let payloadSize = u64(at: start + 16)
        guard payloadSize == UInt64(dtype.payloadBytes(count: count)) else {
            throw error("\(name) header says \(payloadSize) payload bytes; shape \(shape) of \(dtype) needs "
                        + "\(dtype.payloadBytes(count: count))")
        }
        let encoded = UnsafeRawBufferPointer(rebasing: bytes[(start + headerSize)..<end])
        let payload = try decodePayload(encoded, codec: codec, size: Int(payloadSize),
                                        elementBytes: dtype.elementBytes, name: name)
        let frame = TensorFrame(kind: u16(at: start + 6), dtype: dtype, shape: shape, payload: payload)
        return (frame, end)
    }

    private func decodeDType(code: UInt8, bits: UInt8, name: String) throws -> FrameDType {
        guard let dtype = Wire.dtype(code: code, bits: bits) else {
            if Wire.dtype(code: code, bits: 1) != nil || Wire.dtype(code: code, bits: 0) != nil {
                throw error("\(name) has dtype \(code) with an invalid bits field \(bits)")
            }
            throw error("unknown dtype \(code) in \(name)")
        }
        return dtype
    }

    private func decodePayload(_ encoded: UnsafeRawBufferPointer, codec: Wire.CodecTag, size: Int,
                               elementBytes: Int, name: String) throws -> [UInt8] {
        switch codec {
        case .raw:
            guard encoded.count == size else {
                throw error("\(name) is raw with \(encoded.count) payload bytes, header says \(size)")
            }
            return Array(encoded)
        case .zstd:
            return try decompress(encoded, size: size, name: name)
        case .shuffledZstd:
            let planes = try decompress(encoded, size: size, name: name)
            return ByteShuffle.values(fromPlanes: planes, elementBytes: elementBytes)
        }
    }

    private func decompress(_ encoded: UnsafeRawBufferPointer, size: Int, name: String) throws -> [UInt8] {
        // A zstd block needs at least 4 bytes per 128 KiB, so a claim beyond that ratio is false;
        // refusing it keeps a bad header from making us allocate an absurd buffer.
        guard size / Zstd.maxRatio <= encoded.count else {
            throw error("\(name) claims \(size) bytes from \(encoded.count) compressed ones, more than zstd can produce")
        }
        switch Zstd.decompress(encoded, size: size) {
        case .success(let payload): return payload
        case .failure(.zstd(let reason)): throw error("\(name): zstd cannot decompress the payload (\(reason))")
        case .failure(.wrongSize(let actual)):
            throw error("decompressed size differs from header in \(name) (\(actual) bytes, header says \(size))")
        }
    }

    private func checkVersion(at offset: Int, of what: String) throws {
        let version = u16(at: offset)
        guard version == Wire.formatVersion else {
            throw error("\(what) has format version \(version), this build reads \(Wire.formatVersion) (mixed versions?)")
        }
    }

    private func error(_ problem: String) -> FrameError { FrameError(rank: rank, problem: problem) }

    // Little-endian fields; callers have checked the offsets against `bytes.count`.
    private func u16(at offset: Int) -> UInt16 { UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
    private func u32(at offset: Int) -> UInt32 { UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    private func u64(at offset: Int) -> UInt64 { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
}

// MARK: - Layout

/// The wire layout (docs/WIRE.md); all integers little-endian.
enum Wire {
    static let formatVersion: UInt16 = 1
    static let messageMagic: UInt32 = 0x4D41_5152   // "RQAM" in byte order
    static let frameMagic: UInt32 = 0x4641_5152     // "RQAF"

    // Message header: magic u32, version u16, frame count u16, message size u64, CRC-32C u32
    // of the 16 bytes before it.
    static let messageHeaderSize = 20
    static let messageSizeOffset = 8
    static let messageChecksumOffset = 16

    // Frame header: magic u32, version u16, kind u16, dtype u8, bits u8, codec u8, rank u8,
    // CRC-32C u32, payload size u64, encoded size u64, then rank dimensions u64; then the
    // encoded payload.
    static let frameChecksumOffset = 12
    static let frameShapeOffset = 32
    static func frameHeaderSize(rank: Int) -> Int { frameShapeOffset + 8 * rank }

    enum CodecTag: UInt8 { case raw = 0, zstd = 1, shuffledZstd = 2 }

    /// CRC-32C of a whole frame (header and encoded payload) except its own checksum field.
    static func frameChecksum(_ frame: UnsafeRawBufferPointer) -> UInt32 {
        let afterField = frameChecksumOffset + 4
        let head = rqat_crc32c(0, frame.baseAddress, frameChecksumOffset)
        return rqat_crc32c(head, frame.baseAddress! + afterField, frame.count - afterField)
    }

    // dtype codes; 0 is left unused so zeroed memory never reads as a valid frame.
    private static let dtypeCodes: [(FrameDType, UInt8)] = [
        (.float32, 1), (.float16, 2), (.bfloat16, 3), (.int32, 4), (.uint8, 5), (.uint16, 6), (.uint32, 7),
    ]
    private static let packedCode: UInt8 = 8

    static func dtypeCode(_ dtype: FrameDType) -> UInt8 {
        if case .packed = dtype { return packedCode }
        return dtypeCodes.first { $0.0 == dtype }!.1
    }

    /// The bits field: the code width of packed frames, 0 for every other dtype.
    static func bitsField(_ dtype: FrameDType) -> UInt8 {
        if case .packed(let bits) = dtype { return UInt8(bits) }
        return 0
    }

    static func dtype(code: UInt8, bits: UInt8) -> FrameDType? {
        if code == packedCode { return (1...8).contains(bits) ? .packed(bits: Int(bits)) : nil }
        guard bits == 0 else { return nil }
        return dtypeCodes.first { $0.1 == code }?.0
    }
}

extension Array where Element == UInt8 {
    fileprivate mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    fileprivate mutating func storeLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self) }
    }
}

// MARK: - Byte planes and zstd

enum ByteShuffle {
    /// All byte 0s of the values, then all byte 1s, ... (the bytes themselves when elements are
    /// single bytes: nothing to transpose).
    static func planes(_ values: [UInt8], elementBytes: Int) -> [UInt8] {
        transform(values, elementBytes: elementBytes) { rqat_byte_shuffle($0, $1, $2, $3) }
    }

    static func values(fromPlanes planes: [UInt8], elementBytes: Int) -> [UInt8] {
        transform(planes, elementBytes: elementBytes) { rqat_byte_unshuffle($0, $1, $2, $3) }
    }

    private static func transform(
        _ source: [UInt8], elementBytes: Int,
        _ kernel: (UnsafePointer<UInt8>, UnsafeMutablePointer<UInt8>, Int, Int) -> Void
    ) -> [UInt8] {
        guard elementBytes > 1, !source.isEmpty else { return source }
        // Frame payloads are whole elements, so the kernel never sees a ragged tail.
        precondition(source.count % elementBytes == 0, "\(source.count) bytes are not whole \(elementBytes)-byte elements")
        return [UInt8](unsafeUninitializedCapacity: source.count) { out, initialized in
            source.withUnsafeBufferPointer { kernel($0.baseAddress!, out.baseAddress!, source.count / elementBytes, elementBytes) }
            initialized = source.count
        }
    }
}

/// zstd with reused contexts.
///
/// A context holds zstd's tables; making one costs 30-300 µs (measured at level 3 for 64 B to
/// 256 KB inputs), more than compressing a small message. So contexts are pooled rather than
/// created per call: a call takes an idle context (or makes one) and returns it afterwards.
/// Unlike thread-local contexts this needs no per-thread clean-up, a context is never used by
/// two threads at once, and the pool only grows to the number of threads that ever coded at
/// the same time.
enum Zstd {
    /// zstd cannot expand more than this: each block of at most 128 KiB takes at least 4 bytes.
    static let maxRatio = 32 * 1024

    enum Failure: Error {
        case zstd(String)
        case wrongSize(Int)
    }

    private static let compressors = ContextPool(make: { ZSTD_createCCtx() })
    private static let decompressors = ContextPool(make: { ZSTD_createDCtx() })

    static func compress(_ source: UnsafeRawBufferPointer, level: Int) -> [UInt8] {
        precondition((Int(ZSTD_minCLevel())...Int(ZSTD_maxCLevel())).contains(level), "zstd level \(level) out of range")
        let capacity = ZSTD_compressBound(source.count)
        return compressors.withContext { context in
            [UInt8](unsafeUninitializedCapacity: capacity) { out, initialized in
                let written = ZSTD_compressCCtx(context, out.baseAddress, capacity, source.baseAddress, source.count, Int32(level))
                // Compressing into compressBound bytes only fails when memory runs out.
                precondition(ZSTD_isError(written) == 0, "zstd: \(String(cString: ZSTD_getErrorName(written)))")
                initialized = written
            }
        }
    }

    /// Decompresses `source`, which must hold exactly `size` bytes of data.
    static func decompress(_ source: UnsafeRawBufferPointer, size: Int) -> Result<[UInt8], Failure> {
        decompressors.withContext { context in
            var result = 0
            let payload = [UInt8](unsafeUninitializedCapacity: size) { out, initialized in
                result = ZSTD_decompressDCtx(context, out.baseAddress, size, source.baseAddress, source.count)
                initialized = ZSTD_isError(result) == 0 ? result : 0
            }
            if ZSTD_isError(result) != 0 { return .failure(.zstd(String(cString: ZSTD_getErrorName(result)))) }
            return result == size ? .success(payload) : .failure(.wrongSize(result))
        }
    }
}

/// Idle zstd contexts (compression or decompression) shared by all threads.
private final class ContextPool: @unchecked Sendable {   // `idle` is only touched under `lock`
    private let lock = NSLock()
    private var idle: [OpaquePointer] = []
    private let make: () -> OpaquePointer?

    init(make: @escaping () -> OpaquePointer?) { self.make = make }

    func withContext<Result>(_ body: (OpaquePointer) -> Result) -> Result {
        lock.lock()
        let reused = idle.popLast()
        lock.unlock()
        guard let context = reused ?? make() else { preconditionFailure("zstd could not allocate a context") }
        defer {
            lock.lock()
            idle.append(context)
            lock.unlock()
        }
        return body(context)
    }
}
