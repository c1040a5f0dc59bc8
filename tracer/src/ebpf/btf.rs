//! Just enough of the BPF Type Format to find struct member offsets in the running kernel's
//! `/sys/kernel/btf/vmlinux`, so the kernel programs need no compile-time layouts.
//! (Hand-written: the one maintained BTF crate is LGPL and much larger than this need.)

use std::collections::HashMap;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}: {source} (a kernel built with CONFIG_DEBUG_INFO_BTF=y is required)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("kernel BTF has no member `{member}` in struct `{strukt}`")]
    NoMember { strukt: String, member: String },
    #[error("member `{strukt}.{member}` is a bitfield; its offset cannot be used")]
    Bitfield { strukt: String, member: String },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
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

#[derive(Debug, Clone)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset; with the kind flag, the low 24 bits (bitfield size in the high 8).
    offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// Size for int/struct/union/enum, referenced type for ptr/typedef/modifiers.
    size_or_type: u32,
    members: Vec<Member>,
}

/// Parsed kernel BTF: types and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

/// Where a member is: byte offset and size of its (resolved) type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberInfo {
    pub offset: u32,
    pub size: u32,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub const VMLINUX: &'static str = "/sys/kernel/btf/vmlinux";

    pub fn from_sys() -> Result<Self, BtfError> {
        let data = std::fs::read(Self::VMLINUX).map_err(|source| BtfError::Read {
            path: Self::VMLINUX.into(),
            source,
        })?;
        Self::parse(&data)
    }

    pub fn parse(b: &[u8]) -> Result<Self, BtfError> {
        if b.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let tstart = hdr_len + type_off;
        let ts = b
            .get(tstart..tstart + type_len)
            .ok_or(BtfError::Malformed("type section"))?;
        let sstart = hdr_len + str_off;
        let strings = b
            .get(sstart..sstart + str_len)
            .ok_or(BtfError::Malformed("string section"))?
            .to_vec();

        // Type id 0 is void.
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            size_or_type: 0,
            members: vec![],
        }];
        let mut p = 0usize;
        while p < ts.len() {
            let name_off = u32_at(ts, p)?;
            let info = u32_at(ts, p + 4)?;
            let size_or_type = u32_at(ts, p + 8)?;
            p += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = p + i * 12;
                        members.push(Member {
                            name_off: u32_at(ts, m)?,
                            type_id: u32_at(ts, m + 4)?,
                            offset: u32_at(ts, m + 8)?,
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12
                | 16 | KIND_TYPE_TAG => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            p += extra;
            types.push(Type {
                name_off,
                kind,
                kind_flag,
                size_or_type,
                members,
            });
        }
        let mut btf = Btf {
            types,
            strings,
            structs: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name_off != 0 {
                let name = btf.name(t.name_off).to_string();
                // The first definition wins: later ones are duplicates from modules.
                btf.structs.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follow typedefs and modifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(t),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> u32 {
        match self.resolve(id) {
            Some(t) if t.kind == KIND_PTR => 8,
            Some(t) if t.kind == KIND_ARRAY => 0,
            Some(t) => t.size_or_type,
            None => 0,
        }
    }

    /// Find `member` in `t`, looking into anonymous struct/union members; bit offset and member.
    fn find(&self, t: &Type, member: &str, base_bits: u32) -> Option<(u32, Member, bool)> {
        for m in &t.members {
            let bits = if t.kind_flag {
                m.offset & 0x00ff_ffff
            } else {
                m.offset
            };
            let bitfield = t.kind_flag && (m.offset >> 24) != 0;
            if m.name_off != 0 && self.name(m.name_off) == member {
                return Some((base_bits + bits, m.clone(), bitfield));
            }
            if m.name_off == 0 {
                if let Some(inner) = self.resolve(m.type_id) {
                    if inner.kind == KIND_STRUCT || inner.kind == KIND_UNION {
                        if let Some(found) = self.find(inner, member, base_bits + bits) {
                            return Some(found);
                        }
                    }
                }
            }
        }
        None
    }

    /// Byte offset and size of `strukt.member` (anonymous nesting resolved).
    pub fn member(&self, strukt: &str, member: &str) -> Result<MemberInfo, BtfError> {
        let id = *self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let t = &self.types[id as usize];
        let (bits, m, bitfield) = self.find(t, member, 0).ok_or_else(|| BtfError::NoMember {
            strukt: strukt.into(),
            member: member.into(),
        })?;
        if bitfield || bits % 8 != 0 {
            return Err(BtfError::Bitfield {
                strukt: strukt.into(),
                member: member.into(),
            });
        }
        Ok(MemberInfo {
            offset: bits / 8,
            size: self.size_of(m.type_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"nope").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
    }

    #[test]
    fn finds_running_kernel_members() {
        // Every supported kernel has BTF; failing here means the agent cannot run either.
        let btf = Btf::from_sys().expect("kernel BTF");
        let fam = btf.member("sock_common", "skc_family").unwrap();
        assert_eq!(fam.size, 2);
        let dport = btf.member("sock_common", "skc_dport").unwrap();
        assert_eq!(dport.size, 2);
        // skc_daddr sits at the very start of sock_common (in an anonymous union).
        assert_eq!(btf.member("sock_common", "skc_daddr").unwrap().offset, 0);
        assert_eq!(btf.member("file", "private_data").unwrap().size, 8);
        // The socket's network namespace: a `struct net *`, whose `ns.inum` names it.
        assert_eq!(btf.member("sock_common", "skc_net").unwrap().size, 8);
        assert_eq!(btf.member("ns_common", "inum").unwrap().size, 4);
        assert!(btf.member("net", "ns").is_ok());
        assert!(matches!(
            btf.member("sock_common", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member("no_such_struct", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }
}
