# The libraries libcnf links, as imported targets cnf::gsl, cnf::openblas and
# cnf::hdf5. Included by the project's CMakeLists.txt and by the installed
# cnfConfig.cmake, so that a program using find_package(cnf) links what cnf
# was built and measured with: found on the user's machine, not paths baked
# in at build time.
#
# GSL's pkg-config file lists its own reference CBLAS (-lgslcblas) beside
# -lgsl. Linking both lets cblas_dgemm bind to gslcblas and silently bypass
# OpenBLAS, so only libgsl itself is taken from it; OpenBLAS provides the
# CBLAS that libgsl and libcnf call.
#
# Sets cnf_DEPENDENCIES_FOUND (TRUE/FALSE) and cnf_DEPENDENCIES_MISSING.
find_package(PkgConfig QUIET)
set(cnf_DEPENDENCIES_FOUND FALSE)
set(cnf_DEPENDENCIES_MISSING "")
if(NOT PKG_CONFIG_FOUND)
  set(cnf_DEPENDENCIES_MISSING "pkg-config")
  return()
endif()
if(NOT TARGET cnf::gsl)
  pkg_check_modules(CNF_DEP_GSL QUIET gsl)
  pkg_check_modules(CNF_DEP_OPENBLAS QUIET IMPORTED_TARGET openblas)
  pkg_check_modules(CNF_DEP_HDF5 QUIET IMPORTED_TARGET hdf5)
  find_library(CNF_DEP_GSL_LIBRARY NAMES gsl HINTS ${CNF_DEP_GSL_LIBRARY_DIRS})
  foreach(dep GSL OPENBLAS HDF5)
    if(NOT CNF_DEP_${dep}_FOUND)
      string(TOLOWER ${dep} name)
      list(APPEND cnf_DEPENDENCIES_MISSING ${name})
    endif()
  endforeach()
  if(NOT CNF_DEP_GSL_LIBRARY)
    list(APPEND cnf_DEPENDENCIES_MISSING libgsl)
  endif()
  if(cnf_DEPENDENCIES_MISSING)
    return()
  endif()
  add_library(cnf::gsl INTERFACE IMPORTED)
  set_target_properties(cnf::gsl PROPERTIES
    INTERFACE_LINK_LIBRARIES "${CNF_DEP_GSL_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${CNF_DEP_GSL_INCLUDE_DIRS}")
  add_library(cnf::openblas INTERFACE IMPORTED)
  set_target_properties(cnf::openblas PROPERTIES
    INTERFACE_LINK_LIBRARIES PkgConfig::CNF_DEP_OPENBLAS)
  add_library(cnf::hdf5 INTERFACE IMPORTED)
  set_target_properties(cnf::hdf5 PROPERTIES
    INTERFACE_LINK_LIBRARIES PkgConfig::CNF_DEP_HDF5)
endif()
set(cnf_DEPENDENCIES_FOUND TRUE)
