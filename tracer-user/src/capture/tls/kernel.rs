//! Where the running kernel keeps what the TLS programs read to go from a file descriptor to
//! its socket's addresses: member offsets from the kernel's BTF (`/sys/kernel/btf/vmlinux`),
//! and the address of `socket_file_ops` from `/proc/kallsyms` (to tell sockets from other
//! files). The eBPF programs get them as a load-time global ([`KernelOffsets`]); Rust eBPF has
//! no CO-RE relocations, so the daemon does the relocating.
//!
//! The BTF reader here knows just enough of the format (types, struct and union members,
//! anonymous members, typedef/const/volatile chains) to find a member's byte offset.

use std::path::Path;

use tracer_common::tls::KernelOffsets;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF (bad magic or header)")]
    Header,
    #[error("BTF type section cut short")]
    Truncated,
    #[error("BTF type kind {0} unknown")]
    UnknownKind(u32),
    #[error("no struct {0} in the kernel's BTF")]
    NoStruct(String),
    #[error("no member {0} in the kernel's BTF")]
    NoMember(String),
    #[error("{0} is a bit field")]
    BitField(String),
    #[error("reading {path}: {error}")]
    Io { path: String, error: String },
}

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    ty: u32,
    /// Offset in bits; with a bit-field size when `bits` is not 0.
    bit_offset: u32,
    bits: u32,
}

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name: u32,
    /// The referenced type (typedef, const, volatile, …).
    ty: u32,
    members: Vec<Member>,
}

/// A kernel BTF blob, parsed enough to find struct members.
#[derive(Debug)]
pub struct Btf {
    /// Index = type id (0 is `void`).
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or(BtfError::Truncated)
}

impl Btf {
    /// Parses a little-endian BTF blob.
    pub fn parse(b: &[u8]) -> Result<Btf, BtfError> {
        if b.len() < 24 || u16::from_le_bytes([b[0], b[1]]) != BTF_MAGIC {
            return Err(BtfError::Header);
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
        let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
        let types_at = hdr_len.checked_add(type_off).ok_or(BtfError::Header)?;
        let strings_at = hdr_len.checked_add(str_off).ok_or(BtfError::Header)?;
        let section = b.get(types_at..types_at + type_len).ok_or(BtfError::Truncated)?;
        let strings = b.get(strings_at..strings_at + str_len).ok_or(BtfError::Truncated)?.to_vec();
        let mut types = vec![Type { kind: 0, name: 0, ty: 0, members: Vec::new() }];
        let mut at = 0;
        while at < section.len() {
            let name = u32_at(section, at)?;
            let info = u32_at(section, at + 4)?;
            let ty = u32_at(section, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 != 0;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let off = u32_at(section, m + 8)?;
                        let (bit_offset, bits) = if kind_flag { (off & 0xff_ffff, off >> 24) } else { (off, 0) };
                        members.push(Member {
                            name: u32_at(section, m)?,
                            ty: u32_at(section, m + 4)?,
                            bit_offset,
                            bits,
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | 16 | KIND_TYPE_TAG => 0,
                other => return Err(BtfError::UnknownKind(other)),
            };
            at += extra;
            types.push(Type { kind, name, ty, members });
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&c| c == 0).unwrap_or(rest.len())]
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.ty,
                _ => return Some(t),
            }
        }
        None
    }

    fn find_struct(&self, name: &str) -> Option<&Type> {
        self.types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && !t.members.is_empty() && self.name(t.name) == name.as_bytes())
    }

    /// Bit offset of `member` in `t`, looking into anonymous structs and unions; the member's
    /// type and bit-field size.
    fn member_in(&self, t: &Type, member: &str) -> Option<(u32, u32, u32)> {
        for m in &t.members {
            if self.name(m.name) == member.as_bytes() {
                return Some((m.bit_offset, m.ty, m.bits));
            }
            if m.name == 0
                && let Some(inner) = self.resolve(m.ty).filter(|i| matches!(i.kind, KIND_STRUCT | KIND_UNION))
                && let Some((off, ty, bits)) = self.member_in(inner, member)
            {
                return Some((m.bit_offset + off, ty, bits));
            }
        }
        None
    }

    /// Byte offset of `path` (members, outer first) from the start of struct `name`.
    pub fn offset(&self, name: &str, path: &[&str]) -> Result<u32, BtfError> {
        let mut t = self.find_struct(name).ok_or_else(|| BtfError::NoStruct(name.to_owned()))?;
        let mut bits_total = 0;
        let what = || format!("{name}.{}", path.join("."));
        for (i, member) in path.iter().enumerate() {
            let (off, ty, bits) = self.member_in(t, member).ok_or_else(|| BtfError::NoMember(what()))?;
            if bits != 0 || off % 8 != 0 {
                return Err(BtfError::BitField(what()));
            }
            bits_total += off;
            if i + 1 < path.len() {
                t = self.resolve(ty).ok_or_else(|| BtfError::NoMember(what()))?;
            }
        }
        Ok(bits_total / 8)
    }
}

/// The offsets the TLS programs need, from `btf`.
pub fn offsets_from(btf: &Btf, socket_file_ops: u64) -> Result<KernelOffsets, BtfError> {
    let common = |field: &str| -> Result<u32, BtfError> {
        Ok(btf.offset("sock", &["__sk_common"])? + btf.offset("sock_common", &[field])?)
    };
    Ok(KernelOffsets {
        task_files: btf.offset("task_struct", &["files"])?,
        files_fdt: btf.offset("files_struct", &["fdt"])?,
        fdt_max_fds: btf.offset("fdtable", &["max_fds"])?,
        fdt_fd: btf.offset("fdtable", &["fd"])?,
        file_f_op: btf.offset("file", &["f_op"])?,
        file_private_data: btf.offset("file", &["private_data"])?,
        socket_sk: btf.offset("socket", &["sk"])?,
        skc_family: common("skc_family")?,
        skc_daddr: common("skc_daddr")?,
        skc_rcv_saddr: common("skc_rcv_saddr")?,
        skc_dport: common("skc_dport")?,
        skc_num: common("skc_num")?,
        skc_v6_daddr: common("skc_v6_daddr")?,
        skc_v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
        sk_protocol: btf.offset("sock", &["sk_protocol"])?,
        _pad: 0,
        socket_file_ops,
    })
}

/// The address of `name` in a `/proc/kallsyms` text (0 when hidden by `kptr_restrict`).
pub fn kallsyms_address(kallsyms: &str, name: &str) -> Option<u64> {
    kallsyms.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (addr, _kind, sym) = (f.next()?, f.next()?, f.next()?);
        (sym == name).then(|| u64::from_str_radix(addr, 16).ok()).flatten().filter(|&a| a != 0)
    })
}

/// This kernel's offsets, read from `/sys/kernel/btf/vmlinux` and `/proc/kallsyms`.
pub fn running_kernel() -> Result<KernelOffsets, BtfError> {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    let blob =
        std::fs::read(path).map_err(|e| BtfError::Io { path: path.display().to_string(), error: e.to_string() })?;
    let btf = Btf::parse(&blob)?;
    let ops = std::fs::read_to_string("/proc/kallsyms")
        .ok()
        .and_then(|k| kallsyms_address(&k, "socket_file_ops"))
        .unwrap_or(0);
    offsets_from(&btf, ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob of `types` (already encoded) and `strings`.
    fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(types);
        b.extend_from_slice(strings);
        b
    }

    fn ty(out: &mut Vec<u8>, name: u32, kind: u32, vlen: u32, kind_flag: bool, size_or_type: u32) {
        let info = (kind << 24) | vlen | if kind_flag { 1 << 31 } else { 0 };
        for v in [name, info, size_or_type] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn member(out: &mut Vec<u8>, name: u32, ty: u32, offset: u32) {
        for v in [name, ty, offset] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_typedefs() {
        // strings: 0 "", 1 "int", 5 "inner", 11 "a", 13 "b", 15 "outer", 21 "x", 23 "t", 25 "bf"
        let strings = b"\0int\0inner\0a\0b\0outer\0x\0t\0bf\0";
        let mut t = Vec::new();
        ty(&mut t, 1, KIND_INT, 0, false, 4); // 1: int
        t.extend_from_slice(&32u32.to_le_bytes());
        ty(&mut t, 0, KIND_UNION, 2, false, 8); // 2: anonymous union { a; b at 32 bits }
        member(&mut t, 11, 1, 0);
        member(&mut t, 13, 1, 32);
        ty(&mut t, 23, KIND_TYPEDEF, 0, false, 2); // 3: typedef t = that union
        ty(&mut t, 15, KIND_STRUCT, 3, true, 24); // 4: struct outer (bit-field encoding)
        member(&mut t, 21, 1, 0); // x at 0
        member(&mut t, 0, 3, 64); // anonymous (via typedef) at 8 bytes
        member(&mut t, 25, 1, (3 << 24) | 128); // bf: 3 bits at 16 bytes
        let btf = Btf::parse(&blob(&t, strings)).unwrap();
        assert_eq!(btf.offset("outer", &["x"]), Ok(0));
        assert_eq!(btf.offset("outer", &["b"]), Ok(12));
        assert_eq!(btf.offset("outer", &["bf"]), Err(BtfError::BitField("outer.bf".into())));
        assert_eq!(btf.offset("outer", &["nope"]), Err(BtfError::NoMember("outer.nope".into())));
        assert_eq!(btf.offset("inner", &["a"]), Err(BtfError::NoStruct("inner".into())));
        assert_eq!(Btf::parse(&[0; 10]).unwrap_err(), BtfError::Header);
    }

    #[test]
    fn kallsyms_lines() {
        let k = "ffffffff81000000 T _text\nffffffff82a1b2c0 d socket_file_ops\n0000000000000000 d hidden\n";
        assert_eq!(kallsyms_address(k, "socket_file_ops"), Some(0xffff_ffff_82a1_b2c0));
        assert_eq!(kallsyms_address(k, "hidden"), None);
        assert_eq!(kallsyms_address(k, "absent"), None);
    }

    /// On a kernel with BTF (this project's machines): every offset is found.
    #[test]
    fn the_running_kernel_has_every_offset() {
        match running_kernel() {
            Ok(o) => {
                assert!(o.task_files > 0 && o.socket_sk > 0 && o.skc_dport > 0, "{o:?}");
                assert_eq!(o.skc_family, 16, "sock_common's family sits after the address and port pairs");
            }
            Err(BtfError::Io { .. }) => eprintln!("*** no /sys/kernel/btf/vmlinux here: offsets not checked ***"),
            Err(e) => panic!("{e}"),
        }
    }
}
