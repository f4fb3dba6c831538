// Multi-rank checks of the MPI layer. ClusterTests/MPITests starts this under mpirun (XCTest
// runs in one process); every rank checks what it received and rank 0 prints "mpi-check ok".
import Cluster
import Foundation
import Tensors
import Train

func require(_ condition: Bool, _ message: @autoclosure () -> String, rank: Int) {
    if !condition { MPI.abort("mpi-check rank \(rank): \(message())", code: 3) }
}

do {
    let world = try MPI.initialize()
    let r = world.rank, n = world.size

    // Allreduce (fp32, in place): element i of rank r holds r + i.
    var values = (0..<1000).map { Float(r + $0) }
    try values.withUnsafeMutableBufferPointer { try world.allReduceSum($0) }
    let rankSum = Float(n * (n - 1) / 2)
    for i in 0..<1000 { require(values[i] == rankSum + Float(n * i), "allreduce[\(i)] = \(values[i])", rank: r) }

    // Non-blocking allreduce.
    var pending = [Float](repeating: Float(r + 1), count: 4097)
    try pending.withUnsafeMutableBufferPointer { buffer in
        let request = try world.allReduceSumNonBlocking(buffer)
        try request.wait()
    }
    require(pending.allSatisfy { $0 == Float(n * (n + 1) / 2) }, "iallreduce", rank: r)

    // bf16 allreduce through the user-defined op: 1.5 * (r + 1) summed is exact in bf16.
    var halves = [UInt16](repeating: Half.bf16Bits(1.5 * Float(r + 1)), count: 333)
    try halves.withUnsafeMutableBufferPointer { try world.allReduceSumBF16($0) }
    let expected = 1.5 * Float(n * (n + 1) / 2)
    require(halves.allSatisfy { Half.float(fromBF16: $0) == expected }, "bf16 allreduce gave \(Half.float(fromBF16: halves[0]))", rank: r)

    // Split: even and odd ranks; rank order kept.
    let group = try world.split(color: r % 2, key: r)
    require(group.rank == r / 2 && group.size == (n + 1 - r % 2) / 2, "split rank \(group.rank) size \(group.size)", rank: r)

    // Broadcast bytes of a length only the root knows.
    var message: [UInt8] = r == 0 ? Array("hello from rank 0".utf8) : []
    try world.broadcast(&message, root: 0)
    require(String(decoding: message, as: UTF8.self) == "hello from rank 0", "broadcast", rank: r)

    // All-gather of different lengths.
    let gathered = try world.allGather(Array(repeating: UInt8(r), count: r + 1))
    for (i, bytes) in gathered.enumerated() { require(bytes == Array(repeating: UInt8(i), count: i + 1), "allgather from \(i)", rank: r) }

    // Ring of point-to-point messages: non-blocking send right, blocking receive from the left.
    let right = (r + 1) % n, left = (r + n - 1) % n
    let payload = [UInt8](repeating: UInt8(r), count: 100_000 + r)
    let send = try world.sendNonBlocking(payload, to: right, tag: 7)
    let got = try world.receive(from: left, tag: 7)
    try send.wait()
    require(got.source == left && got.tag == 7 && got.bytes.count == 100_000 + left && got.bytes.allSatisfy { $0 == UInt8(left) },
            "ring message from \(left)", rank: r)

    // The students' weight check: equal weights pass; a rank whose weights differ is named.
    let students = StudentGroup(comm: world)
    let weight = Parameter(name: "w", value: Tensor(shape: [5]))
    weight.value.fill(0.25)
    try students.checkIdentical([weight], step: 1)
    if r == n - 1 { weight.value.ptr[3] += 1e-6 }
    do {
        try students.checkIdentical([weight], step: 2)
        require(n == 1, "differing weights went unnoticed", rank: r)
    } catch {
        require("\(error)".contains("student(s) \(n - 1) differ"), "unexpected error: \(error)", rank: r)
    }

    try world.barrier()
    if r == 0 { print("mpi-check ok: \(n) ranks") }
    MPI.finalize()
} catch {
    MPI.abort("mpi-check: \(error)", code: 2)
}
