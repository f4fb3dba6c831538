import CMPI
import Foundation
import Tensors

/// An MPI call failed; the message names the rank and the call.
package struct ClusterError: UserFacingError {
    package let description: String
    package init(_ description: String) { self.description = description }
}

/// A small typed layer over Open MPI. Only the main thread calls MPI (thread level FUNNELED):
/// compute threads never touch it, so no MPI lock is needed.
///
/// `mpirun`/`srun` start the ranks; a process started without them is a world of one rank,
/// which is how single-process runs use the same code path.
package enum MPI {
    /// Initialises MPI once (later calls return the same world). Errors return codes instead of
    /// aborting, so every failure becomes a `ClusterError` naming the rank.
    package static func initialize() throws -> Communicator {
        if let world = worldCommunicator { return world }
        // Open MPI's non-blocking allreduce (libnbc) picks a binomial tree for in-place sums,
        // which sends each gradient bucket twice over a rank's link one after the other;
        // Rabenseifner's reduce-scatter + all-gather moves 2(p-1)/p of it, both directions at
        // once (docs/SCALING.md). Set before MPI_Init, and only when the user has not chosen.
        setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "3", 0)
        var provided: Int32 = 0
        let rc = MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided)
        guard rc == rqat_mpi_success() else { throw ClusterError("MPI_Init_thread failed (code \(rc)); is Open MPI installed and is the job started by mpirun?") }
        guard provided >= Int32(MPI_THREAD_FUNNELED) else {
            throw ClusterError("this MPI provides thread level \(provided), rqat needs MPI_THREAD_FUNNELED (\(MPI_THREAD_FUNNELED))")
        }
        MPI_Comm_set_errhandler(rqat_mpi_comm_world(), rqat_mpi_errors_return())
        let world = Communicator(handle: rqat_mpi_comm_world(), owned: false)
        worldCommunicator = world
        return world
    }

    nonisolated(unsafe) private static var worldCommunicator: Communicator?

    package static var isInitialized: Bool {
        var flag: Int32 = 0
        MPI_Initialized(&flag)
        return flag != 0
    }

    /// True between initialize() and finalize(): the only time MPI may be called.
    package static var isActive: Bool {
        var done: Int32 = 0
        MPI_Finalized(&done)
        return isInitialized && done == 0
    }

    /// Finalises MPI (every rank must call it, after its last communication).
    package static func finalize() {
        if isActive { MPI_Finalize() }
    }

    /// Prints `message` on stderr and stops every rank of the job.
    package static func abort(_ message: String, code: Int32 = 1) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        if isActive { MPI_Abort(rqat_mpi_comm_world(), code) }
        exit(code)
    }

    /// Name of this machine as MPI reports it.
    package static var processorName: String {
        var buffer = [CChar](repeating: 0, count: Int(MPI_MAX_PROCESSOR_NAME) + 1)
        var length: Int32 = 0
        if isInitialized, MPI_Get_processor_name(&buffer, &length) == rqat_mpi_success() {
            return String(cString: buffer)
        }
        return ProcessInfo.processInfo.hostName
    }

    /// Seconds since an arbitrary point (MPI_Wtime), for measuring waits.
    package static var time: Double { isInitialized ? MPI_Wtime() : Date().timeIntervalSinceReferenceDate }
}

/// A pending non-blocking operation. `wait()` must be called before its buffer is reused.
package final class Request {
    fileprivate var handle: MPI_Request? = rqat_mpi_request_null()
    /// Keeps a send buffer alive until the request completes.
    fileprivate var retained: Any?
    fileprivate let what: String
    fileprivate let rank: Int

    fileprivate init(what: String, rank: Int) { self.what = what; self.rank = rank }

    /// Blocks until the operation is done.
    package func wait() throws {
        let rc = MPI_Wait(&handle, rqat_mpi_status_ignore())
        retained = nil
        try check(rc, what, rank: rank)
    }

    /// True when the operation is done (and lets MPI progress it).
    package func test() throws -> Bool {
        var flag: Int32 = 0
        let rc = MPI_Test(&handle, &flag, rqat_mpi_status_ignore())
        try check(rc, what, rank: rank)
        if flag != 0 { retained = nil }
        return flag != 0
    }
}

private func check(_ rc: Int32, _ what: String, rank: Int) throws {
    guard rc != rqat_mpi_success() else { return }
    var buffer = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING) + 1)
    var length: Int32 = 0
    MPI_Error_string(rc, &buffer, &length)
    throw ClusterError("rank \(rank): \(what) failed: \(String(cString: buffer))")
}

/// One MPI communicator (the world, or a role group split from it).
package final class Communicator {
    let handle: MPI_Comm
    private let owned: Bool
    package let rank: Int
    package let size: Int

    init(handle: MPI_Comm, owned: Bool) {
        self.handle = handle
        self.owned = owned
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(handle, &r)
        MPI_Comm_size(handle, &s)
        rank = Int(r)
        size = Int(s)
    }

    deinit {
        if owned && MPI.isActive {
            var h: MPI_Comm? = handle
            MPI_Comm_free(&h)
        }
    }

    /// Ranks with the same `color` form one new communicator, ordered by `key` (then old rank).
    package func split(color: Int, key: Int) throws -> Communicator {
        var newHandle: MPI_Comm?
        try check(MPI_Comm_split(handle, Int32(color), Int32(key), &newHandle), "MPI_Comm_split", rank: rank)
        guard let newHandle else { throw ClusterError("rank \(rank): MPI_Comm_split returned no communicator") }
        MPI_Comm_set_errhandler(newHandle, rqat_mpi_errors_return())
        return Communicator(handle: newHandle, owned: true)
    }

    package func barrier() throws {
        try check(MPI_Barrier(handle), "MPI_Barrier", rank: rank)
    }

    // MARK: - Point to point (byte messages)

    /// MPI counts are 32-bit; larger messages would need chunking, which nothing here sends.
    private func count(_ n: Int) throws -> Int32 {
        guard n <= Int(Int32.max) else { throw ClusterError("rank \(rank): message of \(n) bytes exceeds MPI's 2 GiB count limit; use a smaller batch") }
        return Int32(n)
    }

    package func send(_ bytes: [UInt8], to destination: Int, tag: Int) throws {
        let n = try count(bytes.count)
        let rc = bytes.withUnsafeBytes { MPI_Send($0.baseAddress, n, rqat_mpi_byte(), Int32(destination), Int32(tag), handle) }
        try check(rc, "MPI_Send to rank \(destination)", rank: rank)
    }

    /// Starts sending `bytes`; the request keeps them alive until it completes.
    package func sendNonBlocking(_ bytes: [UInt8], to destination: Int, tag: Int) throws -> Request {
        let request = Request(what: "MPI_Isend to rank \(destination)", rank: rank)
        let box = ByteBox(bytes)
        request.retained = box
        let n = try count(bytes.count)
        let rc = MPI_Isend(box.pointer, n, rqat_mpi_byte(), Int32(destination), Int32(tag), handle, &request.handle)
        try check(rc, "MPI_Isend to rank \(destination)", rank: rank)
        return request
    }

    /// Receives one message of any length (probe, then receive). nil source/tag = any.
    package func receive(from source: Int? = nil, tag: Int? = nil) throws -> (bytes: [UInt8], source: Int, tag: Int) {
        var status = MPI_Status()
        let src = Int32(source ?? Int(rqat_mpi_any_source())), tg = Int32(tag ?? Int(rqat_mpi_any_tag()))
        try check(MPI_Probe(src, tg, handle, &status), "MPI_Probe", rank: rank)
        return try receiveProbed(status)
    }

    /// A message waiting to be received, without blocking (nil when none).
    package func poll(from source: Int? = nil, tag: Int? = nil) throws -> (bytes: [UInt8], source: Int, tag: Int)? {
        var status = MPI_Status()
        var flag: Int32 = 0
        let src = Int32(source ?? Int(rqat_mpi_any_source())), tg = Int32(tag ?? Int(rqat_mpi_any_tag()))
        try check(MPI_Iprobe(src, tg, handle, &flag, &status), "MPI_Iprobe", rank: rank)
        return flag != 0 ? try receiveProbed(status) : nil
    }

    private func receiveProbed(_ probed: MPI_Status) throws -> (bytes: [UInt8], source: Int, tag: Int) {
        var status = probed
        var n: Int32 = 0
        MPI_Get_count(&status, rqat_mpi_byte(), &n)
        var bytes = [UInt8](repeating: 0, count: Int(n))
        let rc = bytes.withUnsafeMutableBytes {
            MPI_Recv($0.baseAddress, n, rqat_mpi_byte(), status.MPI_SOURCE, status.MPI_TAG, handle, &status)
        }
        try check(rc, "MPI_Recv from rank \(probed.MPI_SOURCE)", rank: rank)
        return (bytes, Int(probed.MPI_SOURCE), Int(probed.MPI_TAG))
    }

    // MARK: - Collectives

    /// Every rank gets `root`'s bytes (any length).
    package func broadcast(_ bytes: inout [UInt8], root: Int) throws {
        var n = UInt64(bytes.count)
        try check(MPI_Bcast(&n, 1, rqat_mpi_uint64(), Int32(root), handle), "MPI_Bcast", rank: rank)
        if rank != root { bytes = [UInt8](repeating: 0, count: Int(n)) }
        let c = try count(Int(n))
        let rc = bytes.withUnsafeMutableBytes { MPI_Bcast($0.baseAddress, c, rqat_mpi_byte(), Int32(root), handle) }
        try check(rc, "MPI_Bcast", rank: rank)
    }

    /// Every rank's bytes, in rank order.
    package func allGather(_ bytes: [UInt8]) throws -> [[UInt8]] {
        var mine = Int32(try count(bytes.count))
        var counts = [Int32](repeating: 0, count: size)
        try check(MPI_Allgather(&mine, 1, rqat_mpi_int32(), &counts, 1, rqat_mpi_int32(), handle), "MPI_Allgather", rank: rank)
        var displacements = [Int32](repeating: 0, count: size)
        for i in 1..<max(size, 1) { displacements[i] = displacements[i - 1] + counts[i - 1] }
        var all = [UInt8](repeating: 0, count: Int(counts.reduce(0, +)))
        let rc = bytes.withUnsafeBytes { b in
            MPI_Allgatherv(b.baseAddress, mine, rqat_mpi_byte(), &all, counts, displacements, rqat_mpi_byte(), handle)
        }
        try check(rc, "MPI_Allgatherv", rank: rank)
        return (0..<size).map { Array(all[Int(displacements[$0])..<Int(displacements[$0] + counts[$0])]) }
    }

    /// In place: every rank's buffer becomes the element-wise sum over ranks.
    package func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        let rc = MPI_Allreduce(rqat_mpi_in_place(), buffer.baseAddress, try count(buffer.count),
                               rqat_mpi_float(), rqat_mpi_sum(), handle)
        try check(rc, "MPI_Allreduce", rank: rank)
    }

    /// Starts an in-place sum over ranks; the buffer must not be touched until `wait()`.
    package func allReduceSumNonBlocking(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> Request {
        let request = Request(what: "MPI_Iallreduce", rank: rank)
        let rc = MPI_Iallreduce(rqat_mpi_in_place(), buffer.baseAddress, try count(buffer.count),
                                rqat_mpi_float(), rqat_mpi_sum(), handle, &request.handle)
        try check(rc, "MPI_Iallreduce", rank: rank)
        return request
    }

    /// In place sum of bf16 values (raw UInt16 bit patterns) through a user-defined operation:
    /// each pairwise sum is done in fp32 and rounded back to bf16 (half the bytes of fp32).
    package func allReduceSumBF16(_ buffer: UnsafeMutableBufferPointer<UInt16>) throws {
        let rc = MPI_Allreduce(rqat_mpi_in_place(), buffer.baseAddress, try count(buffer.count),
                               rqat_mpi_uint16(), MPI.bf16SumOp, handle)
        try check(rc, "MPI_Allreduce (bf16)", rank: rank)
    }

    /// Sums a few Doubles over ranks (losses, token counts).
    package func allReduceSum(_ values: [Double]) throws -> [Double] {
        var out = values
        let rc = out.withUnsafeMutableBufferPointer {
            MPI_Allreduce(rqat_mpi_in_place(), $0.baseAddress, Int32($0.count), rqat_mpi_double(), rqat_mpi_sum(), handle)
        }
        try check(rc, "MPI_Allreduce (double)", rank: rank)
        return out
    }

    /// The maximum of a value over ranks.
    package func allReduceMax(_ value: Double) throws -> Double {
        var v = value
        try check(MPI_Allreduce(rqat_mpi_in_place(), &v, 1, rqat_mpi_double(), rqat_mpi_max(), handle),
                  "MPI_Allreduce (max)", rank: rank)
        return v
    }
}

extension MPI {
    /// The bf16 sum operation, created once (MPI_Op_create needs an initialised MPI).
    nonisolated(unsafe) static let bf16SumOp: MPI_Op = {
        var op: MPI_Op?
        MPI_Op_create({ input, inout_, length, _ in
            guard let input, let inout_, let length else { return }
            let a = input.assumingMemoryBound(to: UInt16.self)
            let b = inout_.assumingMemoryBound(to: UInt16.self)
            for i in 0..<Int(length.pointee) {
                b[i] = Half.bf16Bits(Half.float(fromBF16: a[i]) + Half.float(fromBF16: b[i]))
            }
        }, 1, &op)
        return op!
    }()
}

/// A byte buffer with a stable address for non-blocking sends.
private final class ByteBox {
    let pointer: UnsafeMutableRawPointer
    init(_ bytes: [UInt8]) {
        pointer = .allocate(byteCount: max(bytes.count, 1), alignment: 64)
        bytes.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    }
    deinit { pointer.deallocate() }
}
