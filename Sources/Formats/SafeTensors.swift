import Foundation
import Tensors
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Element types a safetensors header may name. Only the float ones decode to fp32; the others
/// are accepted so a file that also holds integer buffers still opens.
package enum SafeTensorsDType: String, Sendable, CaseIterable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL
    case F8_E4M3, F8_E5M2

    package var byteSize: Int {
        switch self {
        case .F64, .I64, .U64: return 8
        case .F32, .I32, .U32: return 4
        case .F16, .BF16, .I16, .U16: return 2
        case .I8, .U8, .BOOL, .F8_E4M3, .F8_E5M2: return 1
        }
    }
}

package struct SafeTensorsInfo: Sendable, Equatable {
    package let name: String
    package let dtype: SafeTensorsDType
    package let shape: [Int]
    /// Byte range within the data section (which starts after the header).
    package let dataRange: Range<Int>

    package var count: Int { shape.reduce(1, *) }
}

/// A memory-mapped `.safetensors` file: 8-byte little-endian header length, a JSON header
/// mapping names to dtype/shape/byte range, then the raw data.
///
/// `init` checks the whole header against the file, so later reads cannot go out of bounds.
package final class SafeTensorsFile: @unchecked Sendable {
    package let path: String
    /// Tensor names in data order.
    package let tensorNames: [String]
    package let metadata: [String: String]
    private let infos: [String: SafeTensorsInfo]
    private let file: MappedFile
    private let dataOffset: Int

    /// Larger headers are not produced by any real writer; the cap keeps a corrupt length from
    /// making us parse hundreds of megabytes of garbage as JSON.
    static let maxHeaderBytes = 100 << 20

    package init(url: URL) throws {
        let path = url.path
        self.path = path
        file = try MappedFile(url: url)
        guard file.size >= 8 else {
            throw FormatError(path, "truncated: \(file.size) bytes, too short for the 8-byte header length; re-download it")
        }
        let headerLength = UInt64(littleEndian: file.base.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(file.size - 8) else {
            throw FormatError(path, "header length \(headerLength) goes beyond the end of the file (\(file.size) bytes); the file is truncated or not safetensors")
        }
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw FormatError(path, "header length \(headerLength) is over \(Self.maxHeaderBytes >> 20) MB; the file is corrupt or not safetensors")
        }
        dataOffset = 8 + Int(headerLength)
        let dataSize = file.size - dataOffset
        let headerBytes = Data(bytes: file.base + 8, count: Int(headerLength))
        guard let header = (try? JSONSerialization.jsonObject(with: headerBytes)) as? [String: Any] else {
            throw FormatError(path, "the header is not a JSON object; the file is corrupt or not safetensors")
        }

        var metadata: [String: String] = [:]
        var infos: [String: SafeTensorsInfo] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw FormatError(path, "__metadata__ must be an object of strings")
                }
                for (k, v) in m {
                    guard let s = v as? String else { throw FormatError(path, "__metadata__ value for \(k) is not a string") }
                    metadata[k] = s
                }
                continue
            }
            infos[name] = try Self.parseEntry(name, value, dataSize: dataSize, path: path)
        }

        // Tensors must not share bytes: sorted by start, each must begin after the previous ends.
        let ordered = infos.values.sorted { ($0.dataRange.lowerBound, $0.name) < ($1.dataRange.lowerBound, $1.name) }
        for (a, b) in zip(ordered, ordered.dropFirst()) where b.dataRange.lowerBound < a.dataRange.upperBound {
            throw FormatError(path, "tensors \(a.name) and \(b.name) overlap (bytes \(a.dataRange) and \(b.dataRange)); the file is corrupt")
        }
        self.metadata = metadata
        self.infos = infos
        tensorNames = ordered.map(\.name)
    }

    private static func parseEntry(_ name: String, _ value: Any, dataSize: Int, path: String) throws -> SafeTensorsInfo {
        func fail(_ why: String) -> FormatError { FormatError(path, "tensor \(name): \(why); the file is corrupt") }
        guard let entry = value as? [String: Any] else { throw fail("header entry is not an object") }
        guard let dtypeName = entry["dtype"] as? String else { throw fail("missing dtype") }
        guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
            throw FormatError(path, "tensor \(name) has unknown dtype \(dtypeName)")
        }
        guard let shape = naturals(entry["shape"]) else { throw fail("shape is not a list of non-negative integers") }
        guard let offsets = naturals(entry["data_offsets"]), offsets.count == 2, offsets[0] <= offsets[1] else {
            throw fail("data_offsets is not a [begin, end] pair")
        }
        guard offsets[1] <= dataSize else {
            throw FormatError(path, "truncated: tensor \(name) needs data bytes \(offsets[0])..<\(offsets[1]) but the data section has \(dataSize) bytes; re-download it")
        }
        var bytes = dtype.byteSize
        for d in shape {
            let (p, overflow) = bytes.multipliedReportingOverflow(by: d)
            guard !overflow else { throw fail("shape \(shape) is absurdly large") }
            bytes = p
        }
        guard bytes == offsets[1] - offsets[0] else {
            throw fail("shape \(shape) of \(dtypeName) needs \(bytes) bytes but data_offsets span \(offsets[1] - offsets[0])")
        }
        return SafeTensorsInfo(name: name, dtype: dtype, shape: shape, dataRange: offsets[0]..<offsets[1])
    }

    /// A JSON list of integers ≥ 0 (JSONSerialization hands numbers over as NSNumber).
    private static func naturals(_ value: Any?) -> [Int]? {
        guard let list = value as? [Any] else { return nil }
        var out: [Int] = []
        for item in list {
            guard let n = item as? NSNumber, let i = Int(exactly: n.doubleValue), i >= 0,
                  n.doubleValue < 9.0e15 else { return nil }
            out.append(i)
        }
        return out
    }

    package func has(_ name: String) -> Bool { infos[name] != nil }

    package func info(_ name: String) throws -> SafeTensorsInfo {
        guard let info = infos[name] else { throw FormatError(path, "no tensor named \(name)") }
        return info
    }

    /// The tensor converted to fp32.
    package func tensor(_ name: String) throws -> Tensor {
        let info = try self.info(name)
        let src = file.base + dataOffset + info.dataRange.lowerBound
        let t = Tensor(shape: info.shape)
        let n = info.count
        // Data offsets need not be aligned, so typed reads go through an aligned copy where needed.
        switch info.dtype {
        case .F32:
            UnsafeMutableRawPointer(t.ptr).copyMemory(from: src, byteCount: n * 4)
        case .F16, .BF16:
            let bits = UnsafeMutablePointer<UInt16>.allocate(capacity: max(n, 1))
            defer { bits.deallocate() }
            UnsafeMutableRawPointer(bits).copyMemory(from: src, byteCount: n * 2)
            if info.dtype == .F16 { Half.convertFP16(bits, to: t.ptr, count: n) }
            else { Half.convertBF16(bits, to: t.ptr, count: n) }
        case .F64:
            for i in 0..<n { t.ptr[i] = Float(src.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
        default:
            throw FormatError(path, "tensor \(name) has dtype \(info.dtype.rawValue), which does not convert to fp32 weights (need F32, F16, BF16 or F64)")
        }
        return t
    }

    /// The values of an I32 tensor (packed integer buffers such as GPTQ's qweight), row-major.
    package func int32s(_ name: String) throws -> [Int32] {
        let info = try self.info(name)
        guard info.dtype == .I32 else {
            throw FormatError(path, "tensor \(name) has dtype \(info.dtype.rawValue), expected I32")
        }
        let src = file.base + dataOffset + info.dataRange.lowerBound
        return [Int32](unsafeUninitializedCapacity: info.count) { buffer, n in
            if info.count > 0 { UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(from: src, byteCount: info.count * 4) }
            n = info.count
        }.map { Int32(littleEndian: $0) }
    }
}

/// Writes `.safetensors` files that Hugging Face `safetensors` and transformers load.
package enum SafeTensorsWriter {
    /// Writes the tensors (in the given order) with a header padded to 8 bytes. F32 tensors are
    /// written as they are and F16/BF16 converted from fp32; for I32 the tensor's 4-byte elements
    /// are written unchanged, so the caller stores Int32 bit patterns in it (`ptr` rebound to
    /// Int32). The file appears
    /// at `url` only when complete: data goes to a temporary file beside it, which is then renamed.
    package static func write(_ tensors: [(name: String, tensor: Tensor, dtype: SafeTensorsDType)],
                             metadata: [String: String] = [:], to url: URL) throws {
        let path = url.path
        var seen = Set<String>()
        for (name, _, dtype) in tensors {
            guard [.F32, .F16, .BF16, .I32].contains(dtype) else {
                throw FormatError(path, "cannot write tensor \(name) as \(dtype.rawValue) (only F32, F16, BF16, I32)")
            }
            guard seen.insert(name).inserted, name != "__metadata__" else {
                throw FormatError(path, "cannot write: tensor name \(name) is repeated or reserved")
            }
        }

        var header = Data(try headerJSON(tensors, metadata: metadata).utf8)
        header.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8))

        let temp = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp").path
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw FormatError(path, "cannot write: \(String(cString: strerror(errno)))") }
        var closed = false
        defer { if !closed { close(fd); unlink(temp) } }

        func put(_ p: UnsafeRawPointer, _ n: Int) throws {
            var done = 0
            while done < n {
                let w = posixWrite(fd, p + done, n - done)
                if w < 0 && errno == EINTR { continue }
                guard w > 0 else { throw FormatError(path, "cannot write: \(String(cString: strerror(errno)))") }
                done += w
            }
        }
        var length = UInt64(header.count).littleEndian
        try put(&length, 8)
        try header.withUnsafeBytes { try put($0.baseAddress!, header.count) }
        for (_, tensor, dtype) in tensors {
            if dtype == .F32 || dtype == .I32 {
                try put(tensor.ptr, tensor.count * 4)
                continue
            }
            // Convert in chunks so a large tensor does not need a second full-size buffer.
            let chunk = 1 << 16
            let bits = UnsafeMutablePointer<UInt16>.allocate(capacity: chunk)
            defer { bits.deallocate() }
            var start = 0
            while start < tensor.count {
                let n = min(chunk, tensor.count - start)
                if dtype == .F16 { Half.convertToFP16(tensor.ptr + start, to: bits, count: n) }
                else { Half.convertToBF16(tensor.ptr + start, to: bits, count: n) }
                try put(bits, n * 2)
                start += n
            }
        }
        guard fsync(fd) == 0, close(fd) == 0 else {
            throw FormatError(path, "cannot write: \(String(cString: strerror(errno)))")
        }
        closed = true
        guard rename(temp, path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(temp)
            throw FormatError(path, "cannot write: \(why)")
        }
    }

    /// The header in tensor order (JSON object order is free; data order readers expect it).
    private static func headerJSON(_ tensors: [(name: String, tensor: Tensor, dtype: SafeTensorsDType)],
                                   metadata: [String: String]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .withoutEscapingSlashes
        func quoted(_ s: String) throws -> String { String(decoding: try encoder.encode(s), as: UTF8.self) }
        var entries: [String] = []
        if !metadata.isEmpty {
            let pairs = try metadata.sorted { $0.key < $1.key }.map { "\(try quoted($0.key)):\(try quoted($0.value))" }
            entries.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for (name, tensor, dtype) in tensors {
            let end = offset + tensor.count * dtype.byteSize
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            entries.append("\(try quoted(name)):{\"dtype\":\"\(dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        return "{" + entries.joined(separator: ",") + "}"
    }
}

/// POSIX write(2), named apart from `SafeTensorsWriter.write`, which shadows it inside the enum.
#if canImport(Glibc)
private let posixWrite = Glibc.write
#else
private let posixWrite = Darwin.write
#endif
